package main

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// Secrets at rest, as an operator meets them: a warning without a key, the key from a file
// (GATEWAY_ENCRYPTION_KEY_FILE), encryption of what was stored in clear, a clear refusal to
// start with the wrong key, and rotation with the old key listed.
func TestServeEncryptsStoredSecrets(t *testing.T) {
	dir := t.TempDir()
	cfg := filepath.Join(dir, "gateway.yaml")
	writeConfig(t, cfg, `admin:
  tokens: [`+testToken+`]
  reveal_secrets: true
store:
  dsn: gw.db
  encryption_key: "${GATEWAY_ENCRYPTION_KEY}"
  previous_encryption_keys: ["${OLD_KEY}"]
`)
	const password = "cb-Pa55word-8c1d"
	newKey := func(name string) (text, id string) {
		raw := make([]byte, 32)
		rand.Read(raw)
		sum := sha256.Sum256(raw)
		text = base64.StdEncoding.EncodeToString(raw)
		writeConfig(t, filepath.Join(dir, name), text+"\n")
		return text, hex.EncodeToString(sum[:4])
	}
	k1, id1 := newKey("k1")
	k2, _ := newKey("k2")
	const warning = "stored secrets are not encrypted"
	inFile := func() bool {
		var all []byte
		files, _ := filepath.Glob(filepath.Join(dir, "gw.db*"))
		for _, f := range files {
			b, _ := os.ReadFile(f)
			all = append(all, b...)
		}
		return bytes.Contains(all, []byte(password))
	}
	checkPassword := func(p *process, id string) {
		t.Helper()
		if status, got := p.request(testToken, "GET", "/api/WebhookRegistrations/"+id, ""); status != 200 || got["callBackPassword"] != password {
			t.Fatalf("registration: %d %v", status, got)
		}
	}

	// No key: it works, in clear, and says so once.
	p := startGateway(t, dir, cfg, "GATEWAY_ENCRYPTION_KEY=", "OLD_KEY=")
	status, r := p.request(testToken, "POST", "/api/WebhookRegistrations",
		`{"requestId":"r","callBackUrl":"https://example.com/cb","callBackUserName":"u","callBackPassword":"`+password+`","sourceSenderId":"s"}`)
	if status != 201 {
		t.Fatalf("create registration: %d %v", status, r)
	}
	id := r["registrationId"].(string)
	p.stop(syscall.SIGTERM)
	if n := strings.Count(p.output.String(), warning); n != 1 {
		t.Fatalf("the warning is logged %d times, want once:\n%s", n, p.output)
	}
	if !inFile() {
		t.Fatal("without a key the password is not in the file: the check below proves nothing")
	}

	// The key from a file: what was in clear is encrypted at start.
	p = startGateway(t, dir, cfg, "GATEWAY_ENCRYPTION_KEY=", "GATEWAY_ENCRYPTION_KEY_FILE="+filepath.Join(dir, "k1"), "OLD_KEY=")
	checkPassword(p, id)
	p.stop(syscall.SIGTERM)
	out := p.output.String()
	if strings.Contains(out, warning) || !strings.Contains(out, "encrypted again") || !strings.Contains(out, id1) {
		t.Errorf("start with a key:\n%s", out)
	}
	if inFile() {
		t.Fatal("the password is in the database file in clear")
	}

	// Another key, without the first: no start, and the error names the key it needs.
	cmd := command(t, dir, []string{"GATEWAY_LISTEN=" + freeAddr(t), "GATEWAY_ENCRYPTION_KEY=" + k2, "OLD_KEY="}, "serve", "--config", cfg)
	stderr, _ := cmd.CombinedOutput()
	if cmd.ProcessState.ExitCode() != 1 || !strings.Contains(string(stderr), "encrypted under key "+id1) {
		t.Fatalf("serve with the wrong key: exit %d\n%s", cmd.ProcessState.ExitCode(), stderr)
	}

	// Rotation: the new key, the old one listed as previous.
	p = startGateway(t, dir, cfg, "GATEWAY_ENCRYPTION_KEY="+k2, "OLD_KEY="+k1)
	checkPassword(p, id)
	p.stop(syscall.SIGTERM)
	// And then the old key can go.
	p = startGateway(t, dir, cfg, "GATEWAY_ENCRYPTION_KEY="+k2, "OLD_KEY=")
	checkPassword(p, id)
	p.stop(syscall.SIGTERM)
	if inFile() {
		t.Fatal("the password is in the database file in clear")
	}
}
