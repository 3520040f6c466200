package sqlite

import (
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ErrInUse means another process, or another Store in this one, has the database open: Open
// takes an exclusive lock on it for the Store's life. Check with errors.Is.
var ErrInUse = errors.New("in use")

// errLockHeld is tryLock's answer when the lock is taken.
var errLockHeld = errors.New("lock held")

// lockPath is the lock file beside the database file at path.
func lockPath(path string) string { return path + ".lock" }

// lock takes the exclusive lock on the database file at path, to be held until unlock, and
// writes this process's id into the lock file for the message of the next one that tries.
// One process owns a SQLite file: RecoverLeases releases every lease it finds, which would
// take live ones from a second process on the same file.
func lock(path string) (*os.File, error) {
	lp := lockPath(path)
	f, err := os.OpenFile(lp, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, fileProblem(lp, false, err)
	}
	switch err := tryLock(f); {
	case errors.Is(err, errLockHeld):
		f.Close()
		return nil, inUse(path, lp)
	case err != nil:
		f.Close()
		return nil, fmt.Errorf("sqlite: lock %s: %w", lp, err)
	}
	if err := f.Truncate(0); err == nil {
		f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	}
	return f, nil
}

// unlock releases the lock taken by lock. The file stays, empty: removing it would let a
// process that opened it just before lock it while a third creates and locks a new one.
func unlock(f *os.File) error {
	if f == nil {
		return nil
	}
	f.Truncate(0)
	return f.Close()
}

// inUse is the error for a database whose lock lp another open file holds, naming the holder's
// process id when the lock file has it.
func inUse(path, lp string) error {
	holder := "another process"
	if b, err := os.ReadFile(lp); err == nil {
		if pid, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && pid > 0 {
			holder = "process " + strconv.Itoa(pid)
			if pid == os.Getpid() {
				holder += " (this one, through another open Store)"
			}
		}
	}
	return fmt.Errorf("sqlite: %s is %w by %s (it holds the lock %s): one process per SQLite file; stop that one first, or give this one a database file of its own",
		path, ErrInUse, holder, lp)
}
