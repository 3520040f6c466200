// Package secretbox encrypts the secrets the store keeps (registration passwords, plugin
// configurations) under a key the operator provides, with AES-256-GCM.
//
// A sealed value is text: "enc:v1:<key id>:<base64 of nonce|ciphertext|tag>". The key id is
// the first 4 bytes of the SHA-256 of the key, in hex, so that a Box holding the current key and
// previous ones opens what any of them sealed, and tells which key a value needs when it has
// none of them. Each value is bound to where it is stored (its associated data, such as
// "subscriptions.password\x00<id>"): a sealed value copied into another row or column does not
// open.
//
// Values that do not start with "enc:" are plaintext from before encryption was turned on and
// are returned as they are. A Box without a current key stores values in clear, except that
// a value which itself starts with "enc:" is stored as "enc:plain:<value>", so that no
// plaintext is ever taken for a sealed value.
package secretbox

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
)

// KeySize is the length of a key in bytes: AES-256.
const KeySize = 32

const (
	sealedPrefix  = "enc:v1:"
	escapedPrefix = "enc:plain:"
	marker        = "enc:"
	keyIDBytes    = 4
)

// A Key is one AES-256-GCM key and its id.
type Key struct {
	id   string
	aead cipher.AEAD
}

// ParseKey decodes a key written as the standard base64 of 32 bytes (what
// `openssl rand -base64 32` prints); surrounding white space is ignored. Its errors never
// show the key.
func ParseKey(text string) (*Key, error) {
	text = strings.TrimSpace(text)
	raw, err := base64.StdEncoding.DecodeString(text)
	if err != nil {
		raw, err = base64.RawStdEncoding.DecodeString(text)
	}
	if err != nil {
		return nil, errors.New("not base64 (make a key with: openssl rand -base64 32)")
	}
	if len(raw) != KeySize {
		return nil, fmt.Errorf("decodes to %d bytes, not %d (make a key with: openssl rand -base64 32)", len(raw), KeySize)
	}
	return newKey(raw)
}

func newKey(raw []byte) (*Key, error) {
	block, err := aes.NewCipher(raw)
	if err != nil {
		return nil, err
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(raw)
	return &Key{id: hex.EncodeToString(sum[:keyIDBytes]), aead: aead}, nil
}

// ID returns the key's id: the first 4 bytes of the SHA-256 of the key, in hex. It reveals
// nothing of the key and names it in sealed values and in errors.
func (k *Key) ID() string { return k.id }

// A Box seals values under its current key and opens values sealed under any of its keys. The
// zero Box and a nil *Box have no keys: they seal nothing and open only plaintext. A Box is
// safe for concurrent use.
type Box struct {
	current *Key
	keys    map[string]*Key
}

// New returns a Box that seals under current and opens what current or any of previous sealed.
// current may be nil: values are then stored in clear, and previous keys still open what they
// sealed (so that encryption can be turned off).
func New(current *Key, previous ...*Key) *Box {
	b := &Box{current: current, keys: make(map[string]*Key)}
	for _, k := range previous {
		if k != nil {
			b.keys[k.id] = k
		}
	}
	if current != nil {
		b.keys[current.id] = current
	}
	return b
}

// Current returns the id of the key values are sealed under, or "" when they are stored in
// clear.
func (b *Box) Current() string {
	if b == nil || b.current == nil {
		return ""
	}
	return b.current.id
}

// Seal returns plaintext sealed under the current key and bound to aad. The empty string
// stays empty: there is nothing to hide. Without a current key the value is returned in clear
// (escaped when it starts with "enc:").
func (b *Box) Seal(plaintext, aad string) (string, error) {
	if plaintext == "" {
		return "", nil
	}
	if b == nil || b.current == nil {
		if strings.HasPrefix(plaintext, marker) {
			return escapedPrefix + plaintext, nil
		}
		return plaintext, nil
	}
	aead := b.current.aead
	nonce := make([]byte, aead.NonceSize(), aead.NonceSize()+len(plaintext)+aead.Overhead())
	if _, err := rand.Read(nonce); err != nil {
		return "", fmt.Errorf("secretbox: %w", err)
	}
	sealed := aead.Seal(nonce, nonce, []byte(plaintext), []byte(aad))
	return sealedPrefix + b.current.id + ":" + base64.StdEncoding.EncodeToString(sealed), nil
}

// KeyError means a sealed value needs a key the Box does not hold.
type KeyError struct {
	// ID is the id of the key the value was sealed under.
	ID string
}

func (e *KeyError) Error() string {
	return fmt.Sprintf("sealed under key %s, which is neither store.encryption_key nor one of store.previous_encryption_keys", e.ID)
}

// ErrCorrupt means a sealed value does not open under its key: it was changed, truncated, or
// moved from where it was sealed.
var ErrCorrupt = errors.New("secretbox: sealed value does not decrypt: it was changed or moved")

// Open returns the plaintext of stored, a value Seal returned with the same aad or plaintext
// stored before encryption was turned on. A value sealed under a key the Box lacks is a
// *KeyError; one that fails authentication is ErrCorrupt.
func (b *Box) Open(stored, aad string) (string, error) {
	switch {
	case strings.HasPrefix(stored, escapedPrefix):
		return stored[len(escapedPrefix):], nil
	case !strings.HasPrefix(stored, sealedPrefix):
		return stored, nil
	}
	id, data, ok := strings.Cut(stored[len(sealedPrefix):], ":")
	if !ok {
		return "", fmt.Errorf("secretbox: sealed value without a key id")
	}
	var k *Key
	if b != nil {
		k = b.keys[id]
	}
	if k == nil {
		return "", &KeyError{ID: id}
	}
	raw, err := base64.StdEncoding.DecodeString(data)
	if err != nil || len(raw) < k.aead.NonceSize()+k.aead.Overhead() {
		return "", ErrCorrupt
	}
	n := k.aead.NonceSize()
	plain, err := k.aead.Open(nil, raw[:n], raw[n:], []byte(aad))
	if err != nil {
		return "", ErrCorrupt
	}
	return string(plain), nil
}

// Fresh reports whether stored is as Seal would store it now: sealed under the current key,
// or, without one, in clear. A value that is not fresh is to be sealed again (key rotation,
// or encryption turned on or off).
func (b *Box) Fresh(stored string) bool {
	if stored == "" {
		return true
	}
	if cur := b.Current(); cur != "" {
		return strings.HasPrefix(stored, sealedPrefix+cur+":")
	}
	return !strings.HasPrefix(stored, sealedPrefix)
}

// KeyID returns the id of the key stored was sealed under, or "" when it is not sealed.
func KeyID(stored string) string {
	if !strings.HasPrefix(stored, sealedPrefix) {
		return ""
	}
	id, _, _ := strings.Cut(stored[len(sealedPrefix):], ":")
	return id
}
