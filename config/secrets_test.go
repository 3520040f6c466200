package config_test

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"strings"
	"testing"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins/builtin"
	"github.com/webhookgw/gateway/store/secretbox"
)

func TestEncryptionKeys(t *testing.T) {
	good := base64.StdEncoding.EncodeToString(randomBytes(32))
	other := base64.StdEncoding.EncodeToString(randomBytes(32))
	short := base64.StdEncoding.EncodeToString(randomBytes(16))

	c := config.Default()
	if box, err := c.Store.SecretBox(); err != nil || box.Current() != "" {
		t.Fatalf("no key: %v, %v; want a box that stores in clear", box, err)
	}
	c.Store.EncryptionKey, c.Store.PreviousEncryptionKeys = good, []string{"", other}
	box, err := c.Store.SecretBox()
	if err != nil {
		t.Fatal(err)
	}
	k, _ := secretbox.ParseKey(good)
	if box.Current() != k.ID() {
		t.Errorf("current key %s, want %s", box.Current(), k.ID())
	}
	old, _ := secretbox.ParseKey(other)
	sealed, _ := secretbox.New(old).Seal("x", "aad")
	if got, err := box.Open(sealed, "aad"); err != nil || got != "x" {
		t.Errorf("a previous key does not open its values: %q, %v", got, err)
	}

	c.Store.EncryptionKey, c.Store.PreviousEncryptionKeys = short, []string{good, "not-a-key!"}
	err = c.Validate(builtin.Registry())
	var ps config.Problems
	if !errors.As(err, &ps) || len(ps) != 2 {
		t.Fatalf("bad keys: %v", err)
	}
	if ps[0].Path != "store.encryption_key" || !strings.Contains(ps[0].Message, "16 bytes, not 32") ||
		ps[1].Path != "store.previous_encryption_keys[1]" || !strings.Contains(ps[1].Message, "openssl rand -base64 32") {
		t.Errorf("problems: %v", err)
	}
	if strings.Contains(err.Error(), short) || strings.Contains(err.Error(), "not-a-key") {
		t.Errorf("a problem shows a key: %v", err)
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}
