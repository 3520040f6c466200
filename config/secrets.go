package config

import (
	"fmt"
	"strings"

	"github.com/webhookgw/gateway/store/secretbox"
)

// SecretBox returns the box that seals stored secrets under store.encryption_key and opens
// what it or store.previous_encryption_keys sealed. Without a key it seals nothing (secrets are
// stored in clear) and still opens what the previous keys sealed. A key that is not the base64
// of 32 bytes is a problem at its path; the message never shows the key.
func (s Store) SecretBox() (*secretbox.Box, error) {
	var ps Problems
	var current *secretbox.Key
	if strings.TrimSpace(s.EncryptionKey) != "" {
		k, err := secretbox.ParseKey(s.EncryptionKey)
		if err != nil {
			ps.Add("store.encryption_key", "%v", err)
		}
		current = k
	}
	var previous []*secretbox.Key
	for i, text := range s.PreviousEncryptionKeys {
		if strings.TrimSpace(text) == "" {
			continue // an unset ${VAR}
		}
		k, err := secretbox.ParseKey(text)
		if err != nil {
			ps.Add(fmt.Sprintf("store.previous_encryption_keys[%d]", i), "%v", err)
			continue
		}
		previous = append(previous, k)
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return secretbox.New(current, previous...), nil
}
