package sqlite

import (
	"errors"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

// The message for a permission error names the user, the path and the fix (Kubernetes'
// fsGroup), for a directory and for a file, and keeps the cause for errors.Is.
func TestPermissionMessage(t *testing.T) {
	who := "uid " + strconv.Itoa(os.Geteuid()) + " (gid " + strconv.Itoa(os.Getegid()) + ")"
	cases := []struct {
		path string
		dir  bool
		want string
	}{
		{"/var/lib/gateway", true, "permission denied: " + who + " cannot create files in /var/lib/gateway, the database's directory"},
		{"/var/lib/gateway/gateway.db", false, "permission denied: " + who + " cannot open /var/lib/gateway/gateway.db for reading and writing"},
	}
	for _, c := range cases {
		for _, errno := range []syscall.Errno{syscall.EACCES, syscall.EPERM} {
			err := fileProblem(c.path, c.dir, &fs.PathError{Op: "open", Path: c.path, Err: errno})
			msg := err.Error()
			if !strings.Contains(msg, c.want) || !strings.Contains(msg, "securityContext.fsGroup") {
				t.Errorf("%v on %s: %s\nwant %q and the fsGroup hint", errno, c.path, msg, c.want)
			}
			if !errors.Is(err, fs.ErrPermission) || !errors.Is(err, errno) {
				t.Errorf("%v on %s: the cause is lost: %v", errno, c.path, err)
			}
		}
	}
	err := fileProblem("/data/gateway.db", false, &fs.PathError{Op: "open", Path: "/data/gateway.db", Err: syscall.EROFS})
	if !strings.Contains(err.Error(), "/data/gateway.db is on a read-only file system") {
		t.Errorf("EROFS: %v", err)
	}
}
