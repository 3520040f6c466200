// Package hmac is the hmac plugin: Standard Webhooks signatures
// (https://www.standardwebhooks.com). On every attempt, retries included, it signs
// "{Webhook-Id}.{Webhook-Timestamp}.{body}" with HMAC-SHA256 under each configured secret and
// sets Webhook-Signature to "v1,<base64>" for each, separated by spaces, the current secret
// first. Signing with previous secrets too lets receivers rotate without missing a delivery.
package hmac

import (
	"context"
	stdhmac "crypto/hmac"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/webhookgw/gateway/config"
	"github.com/webhookgw/gateway/plugins"
)

// Name is the plugin's name in configuration.
const Name = "hmac"

// SecretPrefix starts every secret: a secret is SecretPrefix followed by the standard base64
// (with = padding) of the key bytes, as Standard Webhooks writes them.
const SecretPrefix = "whsec_"

// MinKeyBytes and MaxKeyBytes bound a key's length once decoded, as Standard Webhooks
// recommends.
const (
	MinKeyBytes = 24
	MaxKeyBytes = 64
)

// Config is the plugin's configuration.
type Config struct {
	// Secret signs every attempt: "whsec_" followed by the standard base64 of 24 to 64 key
	// bytes.
	Secret Secret `yaml:"secret"`
	// PreviousSecrets, in the same form, also sign every attempt while receivers move to
	// Secret. Remove them once every receiver has.
	PreviousSecrets []Secret `yaml:"previous_secrets"`
}

// Secret is a signing secret as written in configuration. Its String and GoString methods
// hide it, so that printing a Config does not print a key, and decoding it from YAML reports
// problems without repeating its text.
type Secret string

// String returns a placeholder, never the secret.
func (Secret) String() string { return "whsec_[redacted]" }

// GoString returns a placeholder, never the secret.
func (Secret) GoString() string { return `"whsec_[redacted]"` }

// UnmarshalYAML takes a scalar's text as it is written, refusing a tag other than !!str.
// Unlike the default decoding, its errors never quote the value (nor the tag).
func (s *Secret) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return errors.New("must be a string: whsec_ followed by the base64 key")
	}
	if n.Style&yaml.TaggedStyle != 0 && n.ShortTag() != "!!str" {
		return errors.New("must be a plain string (whsec_ followed by the base64 key) without a YAML tag")
	}
	*s = Secret(n.Value)
	return nil
}

// Plugin sets Webhook-Signature on every attempt. It is immutable once made, so safe for
// concurrent use.
type Plugin struct {
	keys [][]byte // the current key first, then the previous ones in order
}

var _ plugins.Plugin = (*Plugin)(nil)

// New returns the plugin for cfg, or an error saying what is wrong with it. No message
// repeats a secret's text.
func New(cfg Config) (*Plugin, error) {
	var ps config.Problems
	keys := make([][]byte, 0, 1+len(cfg.PreviousSecrets))
	if cfg.Secret == "" {
		ps.Add("secret", "must not be empty: whsec_ followed by the base64 of %d to %d random bytes", MinKeyBytes, MaxKeyBytes)
	} else if key, msg := decodeSecret(string(cfg.Secret)); msg != "" {
		ps.Add("secret", "%s", msg)
	} else {
		keys = append(keys, key)
	}
	for i, s := range cfg.PreviousSecrets {
		path := fmt.Sprintf("previous_secrets[%d]", i)
		key, msg := decodeSecret(string(s))
		switch {
		case s == "":
			ps.Add(path, "must not be empty")
		case msg != "":
			ps.Add(path, "%s", msg)
		case len(keys) > 0 && subtle.ConstantTimeCompare(key, keys[0]) == 1:
			ps.Add(path, "is the same key as secret")
		default:
			keys = append(keys, key)
		}
	}
	if len(ps) > 0 {
		return nil, ps
	}
	return &Plugin{keys: keys}, nil
}

// Factory makes the plugin from its configuration.
var Factory = plugins.Typed(New)

// decodeSecret returns the key s holds, or a message saying what is wrong with s that does not
// quote it.
func decodeSecret(s string) (key []byte, msg string) {
	enc, ok := strings.CutPrefix(s, SecretPrefix)
	if !ok {
		return nil, "must start with whsec_ followed by the base64 key (the Standard Webhooks form)"
	}
	if strings.ContainsAny(enc, "\r\n") {
		return nil, "must not contain a line break"
	}
	key, err := base64.StdEncoding.DecodeString(enc)
	if err != nil {
		var at base64.CorruptInputError
		switch {
		case len(enc)%4 != 0 && isRawBase64(enc):
			return nil, "lacks the = padding of standard base64 after whsec_"
		case errors.As(err, &at):
			return nil, fmt.Sprintf("is not standard base64 (A-Z a-z 0-9 + / and = padding): character %d after whsec_", int64(at)+1)
		default:
			return nil, "is not standard base64 after whsec_"
		}
	}
	if len(key) < MinKeyBytes || len(key) > MaxKeyBytes {
		return nil, fmt.Sprintf("decodes to %d bytes; a key must be %d to %d bytes", len(key), MinKeyBytes, MaxKeyBytes)
	}
	return key, ""
}

func isRawBase64(s string) bool {
	_, err := base64.RawStdEncoding.DecodeString(s)
	return err == nil
}

// Apply signs the attempt with every key and sets Webhook-Signature. The request must already
// carry Webhook-Id and Webhook-Timestamp (Unix seconds), which the gateway sets before the
// plugins run.
func (p *Plugin) Apply(_ context.Context, req *http.Request, body []byte) error {
	id := req.Header.Get("Webhook-Id")
	if id == "" {
		return errors.New("hmac: the request has no Webhook-Id header")
	}
	ts := req.Header.Get("Webhook-Timestamp")
	if ts == "" {
		return errors.New("hmac: the request has no Webhook-Timestamp header")
	}
	if n, err := strconv.ParseInt(ts, 10, 64); err != nil || strconv.FormatInt(n, 10) != ts {
		return fmt.Errorf("hmac: Webhook-Timestamp %q is not Unix seconds", ts)
	}
	req.Header.Set("Webhook-Signature", p.sign(id, ts, body))
	return nil
}

// sign returns the Webhook-Signature value for one attempt.
func (p *Plugin) sign(id, ts string, body []byte) string {
	var b strings.Builder
	for i, key := range p.keys {
		mac := stdhmac.New(sha256.New, key)
		mac.Write([]byte(id))
		mac.Write([]byte{'.'})
		mac.Write([]byte(ts))
		mac.Write([]byte{'.'})
		mac.Write(body)
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString("v1,")
		b.WriteString(base64.StdEncoding.EncodeToString(mac.Sum(nil)))
	}
	return b.String()
}
