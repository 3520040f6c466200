package sqlite

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Check reports whether a Store could be opened at path now: the database's directory exists
// and this process can create files in it (SQLite creates the -wal and -shm files beside the
// database), the database's files that exist can be read and written, and no other Store has
// the file open. It changes nothing (a file it creates to find out is removed at once). Its
// errors name the cause, the path, the user and the fix, as Open's do.
func Check(path string) error {
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	if err := checkDir(path); err != nil {
		return err
	}
	if err := checkFiles(path); err != nil {
		return err
	}
	lp := lockPath(path)
	f, err := os.OpenFile(lp, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // never opened, or by nobody who is still running: the lock is free
	}
	if err != nil {
		return fileProblem(lp, false, err)
	}
	defer f.Close() // releases the lock, if tryLock took it
	if err := tryLock(f); err != nil {
		if errors.Is(err, errLockHeld) {
			return inUse(path, lp)
		}
		return fmt.Errorf("sqlite: lock %s: %w", lp, err)
	}
	return nil
}

// checkDir reports why the database file at path could not be created or used: its directory
// is missing, is not a directory, or does not let this process create files in it.
func checkDir(path string) error {
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fileProblem(dir, true, err)
	}
	if !fi.IsDir() {
		return fileProblem(dir, true, &fs.PathError{Op: "stat", Path: dir, Err: syscall.ENOTDIR})
	}
	// Creating a file is the one sure test: permissions, ACLs, a read-only mount, root.
	f, err := os.CreateTemp(dir, ".gateway-write-check-*")
	if errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
		// Writable, but full: the store opens and says so (Writable), rather than the
		// gateway refusing to start.
		return nil
	}
	if err != nil {
		return fileProblem(dir, true, err)
	}
	f.Close()
	os.Remove(f.Name())
	return nil
}

// checkFiles reports why a database file at path that exists (the database, its -wal and
// -shm files) could not be opened for reading and writing. SQLite would open a read-only file
// read-only and fail at the first write, or say only "unable to open database file".
func checkFiles(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm"} {
		f, err := os.OpenFile(p, os.O_RDWR, 0)
		if errors.Is(err, fs.ErrNotExist) {
			continue
		}
		if err != nil {
			return fileProblem(p, false, err)
		}
		f.Close()
	}
	return nil
}

// fileProblem explains err, met on the file or directory at path: what is wrong, as which user
// when it is a permission, and what to do. The error wraps err (errors.Is(err,
// fs.ErrPermission) holds).
func fileProblem(path string, dir bool, err error) error {
	who := fmt.Sprintf("uid %d (gid %d)", os.Geteuid(), os.Getegid())
	switch {
	case errors.Is(err, fs.ErrPermission):
		if dir {
			return fmt.Errorf("sqlite: permission denied: %s cannot create files in %s, the database's directory: "+
				"make it writable by that user or group (in Kubernetes, set the pod's securityContext.fsGroup so that the "+
				"volume is writable by the gateway's group): %w", who, path, err)
		}
		return fmt.Errorf("sqlite: permission denied: %s cannot open %s for reading and writing: "+
			"make it writable by that user or group (chown or chmod it; in Kubernetes, set the pod's "+
			"securityContext.fsGroup): %w", who, path, err)
	case errors.Is(err, syscall.EROFS):
		return fmt.Errorf("sqlite: %s is on a read-only file system: the database needs a writable one "+
			"(a volume not mounted read-only): %w", path, err)
	case errors.Is(err, syscall.ENOTDIR):
		file := path
		for d := path; ; d = filepath.Dir(d) {
			if fi, err := os.Stat(d); err == nil {
				if !fi.IsDir() {
					file = d
				}
				break
			}
			if d == filepath.Dir(d) {
				break
			}
		}
		return fmt.Errorf("sqlite: %s is not a directory, so the database cannot be created under it: "+
			"give the database a path in a directory: %w", file, err)
	case dir && errors.Is(err, fs.ErrNotExist):
		return fmt.Errorf("sqlite: the directory %s does not exist: create it and make it writable by %s, the gateway's user, "+
			"or give the database a path in a directory that exists: %w", path, who, err)
	}
	return fmt.Errorf("sqlite: %s: %w", path, err)
}
