package config_test

import (
	"encoding/base64"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
)

// writeFiles writes name -> content files into a new directory and returns it.
func writeFiles(t testing.TB, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// Secrets from files, the Kubernetes way: ${file:PATH} and VAR_FILE, read from real files.
func TestExpandFiles(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"token":  "t0k\n",
		"two":    "two\n\n",
		"crlf":   "crlf\r\n",
		"bare":   "bare",
		"empty":  "",
		"dollar": "${A}\n", // a file's content is taken as it is, never expanded again
		"big":    strings.Repeat("x", config.MaxSecretFile+1),
	})
	// Kubernetes mounts a secret as a symbolic link to a file in a ..data directory.
	if err := os.Symlink(filepath.Join(dir, "token"), filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	lookup := env(map[string]string{
		"A":           "1",
		"TOKEN_FILE":  p("token"),
		"BOTH":        "from-env",
		"BOTH_FILE":   p("token"),
		"EMPTY":       "",
		"EMPTY_FILE":  p("bare"),
		"NOFILE_FILE": p("missing"),
		"BLANK_FILE":  p("empty"),
	})
	cases := []struct{ in, out, err string }{
		{"${file:" + p("token") + "}", "t0k", ""},
		{"Bearer ${file:" + p("token") + "}!", "Bearer t0k!", ""},
		{"${file:" + p("two") + "}", "two\n", ""}, // one trailing newline dropped, no more
		{"${file:" + p("crlf") + "}", "crlf", ""}, // a Windows newline too
		{"${file:" + p("bare") + "}", "bare", ""},
		{"${file:" + p("link") + "}", "t0k", ""},
		{"${file:" + p("dollar") + "}", "${A}", ""},
		{"$${file:" + p("token") + "}", "${file:" + p("token") + "}", ""},
		{"${TOKEN}", "t0k", ""},            // TOKEN unset, TOKEN_FILE set
		{"${BOTH}", "from-env", ""},        // the variable wins over its _FILE
		{"${EMPTY}", "bare", ""},           // set but empty: the file
		{"${BLANK:-dflt}", "dflt", ""},     // an empty file is an empty value
		{"${NEITHER:-dflt}", "dflt", ""},   // no variable, no _FILE
		{"${A:-x}${TOKEN:-y}", "1t0k", ""}, //
		{"${file:" + p("missing") + "}", "", p("missing") + ": no such file or directory"},
		{"${NOFILE}", "", "${NOFILE}: NOFILE is unset or empty, and NOFILE_FILE names a file that cannot be read: stat " + p("missing")},
		{"${file:" + dir + "}", "", dir + ": not a regular file"},
		{"${file:" + fifo + "}", "", fifo + ": not a regular file"}, // refused, not waited on
		{"${file:" + p("big") + "}", "", p("big") + ": larger than 1048576 bytes"},
		{"${file:}", "", "names no file"},
		{"${file:" + p("token"), "", "unterminated"},
	}
	for _, c := range cases {
		got, err := config.Expand(c.in, lookup)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("Expand(%q): error %v, want %q", c.in, err, c.err)
			}
			if err != nil && strings.Contains(err.Error(), "t0k") {
				t.Errorf("Expand(%q): the error shows a file's content: %v", c.in, err)
			}
			continue
		}
		if err != nil || got != c.out {
			t.Errorf("Expand(%q) = %q, %v; want %q", c.in, got, err, c.out)
		}
	}
}

// Through the loader: file secrets in any value, the encryption key from a _FILE variable,
// and a missing file reported at its YAML path.
func TestParseFileSecrets(t *testing.T) {
	key := base64.StdEncoding.EncodeToString(randomBytes(32))
	dir := writeFiles(t, map[string]string{"admin": "adm1n-t0k\n", "bearer": "b3arer\n", "key": key + "\n"})
	yaml := `
admin:
  tokens: ["${file:` + dir + `/admin}"]
store:
  encryption_key: "${GATEWAY_ENCRYPTION_KEY}"
subscriptions:
  - id: a
    url: https://example.com/hooks
    plugins:
      - name: bearer
        config: { token: "${file:` + dir + `/bearer}" }
`
	cfg, err := config.Parse([]byte(yaml), env(map[string]string{"GATEWAY_ENCRYPTION_KEY_FILE": dir + "/key"}), builtin.Registry())
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Admin.Tokens; len(got) != 1 || got[0] != "adm1n-t0k" {
		t.Errorf("admin.tokens %q", got)
	}
	if cfg.Store.EncryptionKey != key {
		t.Errorf("store.encryption_key from GATEWAY_ENCRYPTION_KEY_FILE: %q", cfg.Store.EncryptionKey)
	}
	var plugin struct{ Token string }
	if err := cfg.Subscriptions[0].Plugins[0].Config.Decode(&plugin); err != nil || plugin.Token != "b3arer" {
		t.Errorf("plugin token %q, %v", plugin.Token, err)
	}

	_, err = config.Parse([]byte(strings.ReplaceAll(yaml, dir+"/bearer", dir+"/nope")), env(nil), builtin.Registry())
	want := "subscriptions[0].plugins[0].config.token: ${file:" + dir + "/nope}: stat " + dir + "/nope: no such file or directory"
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("a missing file: %v\nwant %s", err, want)
	}
}

// FuzzExpandFiles expands arbitrary text against real files in a directory of its own
// (${file:/name} reads dir/name): it must never panic, leave text without "$" alone, and
// never show a file's content in an error.
func FuzzExpandFiles(f *testing.F) {
	for _, s := range []string{"${file:/secret}", "${S}", "${S:-d}", "x${file:/secret}${", "${file:/nope}", "${file:}",
		"${NOPE}", "$${file:/secret}", "${file:/secret}}", "${file:/../secret}", "${file:secret}"} {
		f.Add(s)
	}
	dir := writeFiles(f, map[string]string{"secret": "S3CRET-CONTENT\n"})
	fsys := os.DirFS(dir)
	src := config.Source{
		Env: env(map[string]string{"S_FILE": "/secret", "NOPE_FILE": "/nope"}),
		ReadFile: func(path string) ([]byte, error) {
			name, ok := strings.CutPrefix(path, "/")
			if !ok || !fs.ValidPath(name) {
				return nil, &fs.PathError{Op: "open", Path: path, Err: fs.ErrInvalid}
			}
			return fs.ReadFile(fsys, name)
		},
	}
	f.Fuzz(func(t *testing.T, s string) {
		out, err := src.Expand(s)
		if err != nil {
			if strings.Contains(err.Error(), "S3CRET") && !strings.Contains(s, "S3CRET") {
				t.Fatalf("Expand(%q): the error shows the file's content: %v", s, err)
			}
			return
		}
		if !strings.Contains(s, "$") && out != s {
			t.Fatalf("Expand(%q) = %q", s, out)
		}
		if s == "${file:/secret}" && out != "S3CRET-CONTENT" {
			t.Fatalf("Expand(%q) = %q", s, out)
		}
	})
}
