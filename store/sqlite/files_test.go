package sqlite_test

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/webhookgw/gateway/store/sqlite"
)

// A database path that cannot work is refused by Open and by Check with the cause, the path
// and the fix, not SQLite's "unable to open database file (14)".
func TestUnusablePathsNameCauseAndFix(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "a-file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	uid := "uid " + strconv.Itoa(os.Geteuid())
	cases := []struct {
		name, path string
		want       []string
		is         error
	}{
		{"missing directory", filepath.Join(dir, "missing", "gateway.db"),
			[]string{"the directory " + filepath.Join(dir, "missing") + " does not exist", "create it", uid}, fs.ErrNotExist},
		{"missing parent too", filepath.Join(dir, "no", "such", "gateway.db"),
			[]string{"the directory " + filepath.Join(dir, "no", "such") + " does not exist"}, fs.ErrNotExist},
		{"under a regular file", filepath.Join(file, "gateway.db"),
			[]string{file + " is not a directory", "give the database a path in a directory"}, nil},
		{"deeper under a regular file", filepath.Join(file, "sub", "gateway.db"),
			[]string{file + " is not a directory"}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s, err := sqlite.Open(context.Background(), c.path, sqlite.Options{})
			if err == nil {
				s.Close()
				t.Fatal("Open succeeded")
			}
			checkErr := sqlite.Check(c.path)
			for what, err := range map[string]error{"Open": err, "Check": checkErr} {
				if err == nil {
					t.Fatalf("%s: no error", what)
				}
				for _, w := range c.want {
					if !strings.Contains(err.Error(), w) {
						t.Errorf("%s: %v\nwant it to say %q", what, err, w)
					}
				}
				if strings.Contains(err.Error(), "(14)") {
					t.Errorf("%s: SQLite's own message: %v", what, err)
				}
				if c.is != nil && !errors.Is(err, c.is) {
					t.Errorf("%s: %v is not %v", what, err, c.is)
				}
			}
		})
	}
	if _, err := os.Stat(filepath.Join(dir, "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a refused path was created: %v", err)
	}
}

// Check finds nothing wrong with a usable path, changes nothing there, and reports a file that
// a Store has open, naming the process.
func TestCheck(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.db")
	if err := sqlite.Check(path); err != nil {
		t.Fatalf("Check of a new file in a writable directory: %v", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Fatalf("Check left %v behind", entries)
	}
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	err = sqlite.Check(path)
	if !errors.Is(err, sqlite.ErrInUse) || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Fatalf("Check of an open file: %v; want ErrInUse naming this process", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sqlite.Check(path); err != nil {
		t.Fatalf("Check after Close: %v", err)
	}
	// Check's own look at the lock did not keep it.
	s, err = sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatalf("Open after Check: %v", err)
	}
	s.Close()
}

// Permissions, for real: an unwritable directory and a read-only database file. Root is not
// stopped by either, so as root (as on the development machine) this skips;
// TestPermissionMessage checks the message for EACCES there.
func TestPermissionDenied(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("running as root, whom chmod does not stop; TestPermissionMessage covers the message")
	}
	uid := "uid " + strconv.Itoa(os.Geteuid())
	locked := filepath.Join(t.TempDir(), "locked")
	if err := os.Mkdir(locked, 0o555); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(locked, "gateway.db")
	for what, err := range map[string]error{"Check": sqlite.Check(path), "Open": openErr(path)} {
		if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), "permission denied: "+uid) ||
			!strings.Contains(err.Error(), locked) || !strings.Contains(err.Error(), "fsGroup") {
			t.Errorf("%s of a database in a read-only directory: %v", what, err)
		}
	}

	path = filepath.Join(t.TempDir(), "gateway.db")
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if err := os.Chmod(path, 0o444); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{"Check": sqlite.Check(path), "Open": openErr(path)} {
		if !errors.Is(err, fs.ErrPermission) || !strings.Contains(err.Error(), uid+" (gid") ||
			!strings.Contains(err.Error(), "cannot open "+path+" for reading and writing") {
			t.Errorf("%s of a read-only database: %v", what, err)
		}
	}
}

func openErr(path string) error {
	s, err := sqlite.Open(context.Background(), path, sqlite.Options{})
	if err == nil {
		s.Close()
	}
	return err
}
