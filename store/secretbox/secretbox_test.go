package secretbox_test

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"

	"github.com/webhookgw/gateway/store/secretbox"
)

// newKey returns a fresh key and its text, as `openssl rand -base64 32` would print it.
func newKey(t *testing.T) (*secretbox.Key, string) {
	t.Helper()
	raw := make([]byte, secretbox.KeySize)
	rand.Read(raw)
	text := base64.StdEncoding.EncodeToString(raw)
	k, err := secretbox.ParseKey(text + "\n")
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(raw)
	if want := hex.EncodeToString(sum[:4]); k.ID() != want {
		t.Fatalf("key id %s, want %s (the first 4 bytes of the key's SHA-256)", k.ID(), want)
	}
	return k, text
}

func TestRoundTrip(t *testing.T) {
	k, _ := newKey(t)
	box := secretbox.New(k)
	for _, plain := range []string{"1234", "token: t0k\n", "enc:v1:looks:sealed", strings.Repeat("é", 3000), "\x00\xff"} {
		sealed, err := box.Seal(plain, "subscriptions.password\x00a")
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasPrefix(sealed, "enc:v1:"+k.ID()+":") || strings.Contains(sealed, plain) {
			t.Fatalf("sealed %q as %q", plain, sealed)
		}
		again, _ := box.Seal(plain, "subscriptions.password\x00a")
		if again == sealed {
			t.Fatal("two seals of one value are equal: the nonce is not fresh")
		}
		got, err := box.Open(sealed, "subscriptions.password\x00a")
		if err != nil || got != plain {
			t.Fatalf("Open = %q, %v; want %q", got, err, plain)
		}
		if !box.Fresh(sealed) {
			t.Error("a value sealed under the current key is not fresh")
		}
	}
	if s, err := box.Seal("", "x"); s != "" || err != nil {
		t.Errorf("Seal of the empty string = %q, %v", s, err)
	}
}

// A sealed value that was changed, truncated or moved to another row fails to open, with
// ErrCorrupt, never with garbage.
func TestTamperDetection(t *testing.T) {
	k, _ := newKey(t)
	box := secretbox.New(k)
	sealed, _ := box.Seal("s3cret-password", "subscriptions.password\x00a")
	prefix := "enc:v1:" + k.ID() + ":"
	raw, err := base64.StdEncoding.DecodeString(strings.TrimPrefix(sealed, prefix))
	if err != nil {
		t.Fatal(err)
	}
	for i := range raw {
		flipped := append([]byte(nil), raw...)
		flipped[i] ^= 0x01
		if got, err := box.Open(prefix+base64.StdEncoding.EncodeToString(flipped), "subscriptions.password\x00a"); !errors.Is(err, secretbox.ErrCorrupt) {
			t.Fatalf("byte %d flipped: Open = %q, %v", i, got, err)
		}
	}
	cases := map[string]struct{ stored, aad string }{
		"another row":    {sealed, "subscriptions.password\x00b"},
		"another column": {sealed, "subscriptions.plugins\x00a\x000"},
		"truncated":      {sealed[:len(sealed)-4], "subscriptions.password\x00a"},
		"too short":      {prefix + "AAAA", "subscriptions.password\x00a"},
		"not base64":     {prefix + "!!!!", "subscriptions.password\x00a"},
	}
	for name, c := range cases {
		if got, err := box.Open(c.stored, c.aad); !errors.Is(err, secretbox.ErrCorrupt) {
			t.Errorf("%s: Open = %q, %v; want ErrCorrupt", name, got, err)
		}
	}
}

// A value sealed under a key the box lacks is a KeyError naming that key's id.
func TestWrongKey(t *testing.T) {
	k1, _ := newKey(t)
	k2, _ := newKey(t)
	sealed, _ := secretbox.New(k1).Seal("s3cret", "aad")
	for name, box := range map[string]*secretbox.Box{"other key": secretbox.New(k2), "no key": secretbox.New(nil), "nil box": nil} {
		got, err := box.Open(sealed, "aad")
		var ke *secretbox.KeyError
		if !errors.As(err, &ke) || ke.ID != k1.ID() || got != "" {
			t.Fatalf("%s: Open = %q, %v; want a KeyError for %s", name, got, err, k1.ID())
		}
		if !strings.Contains(err.Error(), k1.ID()) {
			t.Errorf("%s: error %q does not name the key id", name, err)
		}
	}
	// Same id, other key: cannot happen by chance (4 bytes of SHA-256), but it must not open.
	forged := strings.Replace(sealed, k1.ID(), k2.ID(), 1)
	if _, err := secretbox.New(k2).Open(forged, "aad"); !errors.Is(err, secretbox.ErrCorrupt) {
		t.Errorf("a value relabelled with another key's id: %v", err)
	}
}

// Rotation: the new key seals, the previous one still opens what it sealed, and Fresh tells
// which values to seal again.
func TestRotation(t *testing.T) {
	old, _ := newKey(t)
	cur, _ := newKey(t)
	before := secretbox.New(old)
	sealedOld, _ := before.Seal("s3cret", "aad")

	after := secretbox.New(cur, old)
	if after.Current() != cur.ID() {
		t.Fatalf("Current = %s, want %s", after.Current(), cur.ID())
	}
	if got, err := after.Open(sealedOld, "aad"); err != nil || got != "s3cret" {
		t.Fatalf("the previous key does not open its value: %q, %v", got, err)
	}
	if after.Fresh(sealedOld) {
		t.Error("a value under the previous key is fresh")
	}
	if after.Fresh("plaintext from before") {
		t.Error("plaintext is fresh though a key is set")
	}
	resealed, _ := after.Seal("s3cret", "aad")
	if !after.Fresh(resealed) {
		t.Error("a value sealed again is not fresh")
	}
	// Once resealed, the old key can go.
	if got, err := secretbox.New(cur).Open(resealed, "aad"); err != nil || got != "s3cret" {
		t.Fatalf("without the old key: %q, %v", got, err)
	}
	// Turning encryption off: no current key, the old one listed; values go back to clear.
	off := secretbox.New(nil, cur)
	if off.Fresh(resealed) || !off.Fresh("in clear") {
		t.Error("without a current key, sealed values are to be decrypted and plaintext kept")
	}
	if got, err := off.Open(resealed, "aad"); err != nil || got != "s3cret" {
		t.Fatalf("opening with a previous key only: %q, %v", got, err)
	}
}

// Without a key, values are kept in clear, and plaintext that looks sealed is escaped, so it
// is never taken for a sealed value.
func TestNoKey(t *testing.T) {
	for _, box := range []*secretbox.Box{nil, secretbox.New(nil)} {
		for _, plain := range []string{"1234", "enc:v1:deadbeef:AAAA", "enc:plain:x", "enc:"} {
			stored, err := box.Seal(plain, "aad")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.HasPrefix(plain, "enc:") && stored != plain {
				t.Errorf("Seal(%q) without a key = %q", plain, stored)
			}
			if !box.Fresh(stored) {
				t.Errorf("%q stored in clear is not fresh", stored)
			}
			if got, err := box.Open(stored, "aad"); err != nil || got != plain {
				t.Errorf("Open(Seal(%q)) = %q, %v", plain, got, err)
			}
		}
	}
	// An escaped value is opened by a box with a key too (written before encryption was on).
	k, _ := newKey(t)
	if got, err := secretbox.New(k).Open("enc:plain:enc:v1:x", "aad"); err != nil || got != "enc:v1:x" {
		t.Errorf("escaped plaintext under a keyed box: %q, %v", got, err)
	}
}

func TestParseKey(t *testing.T) {
	_, text := newKey(t)
	if _, err := secretbox.ParseKey(strings.TrimRight(text, "=")); err != nil {
		t.Errorf("unpadded base64: %v", err)
	}
	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	for _, bad := range []string{"", "not base64 at all!", short, text + text} {
		_, err := secretbox.ParseKey(bad)
		if err == nil {
			t.Errorf("ParseKey(%q) accepted", bad)
			continue
		}
		if bad != "" && strings.Contains(err.Error(), bad) {
			t.Errorf("the error shows the key: %v", err)
		}
		if !strings.Contains(err.Error(), "openssl rand -base64 32") {
			t.Errorf("the error does not say how to make a key: %v", err)
		}
	}
}

// FuzzOpen: opening any stored text never panics, and never returns plaintext for a value
// that claims to be sealed under a key the box does not hold.
func FuzzOpen(f *testing.F) {
	raw := make([]byte, secretbox.KeySize)
	k, err := secretbox.ParseKey(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		f.Fatal(err)
	}
	box := secretbox.New(k)
	sealed, _ := box.Seal("s3cret", "aad")
	for _, s := range []string{sealed, "plain", "enc:", "enc:v1:", "enc:v1:" + k.ID() + ":", "enc:plain:x", "enc:v1:00000000:AAAA"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, stored string) {
		got, err := box.Open(stored, "aad")
		if err != nil {
			return
		}
		if strings.HasPrefix(stored, "enc:v1:") && !strings.HasPrefix(stored, "enc:v1:"+k.ID()+":") {
			t.Fatalf("Open(%q) = %q without its key", stored, got)
		}
	})
}
