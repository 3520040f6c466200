package postgres_test

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/postgres"
	"github.com/webhookgw/gateway/store/secretbox"
	"github.com/webhookgw/gateway/store/storetest"
)

// newKey returns a fresh key, as `openssl rand -base64 32` makes one.
func newKey(t testing.TB) *secretbox.Key {
	t.Helper()
	raw := make([]byte, secretbox.KeySize)
	rand.Read(raw)
	k, err := secretbox.ParseKey(base64.StdEncoding.EncodeToString(raw))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// The whole conformance suite holds with encryption on: callers see plaintext.
func TestConformanceEncrypted(t *testing.T) {
	box := secretbox.New(newKey(t))
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, schema(t), postgres.Options{Secrets: box})
	}, storetest.Capabilities{SharedRateLimit: true})
}

const password, token = "pw-Zq81xK2v", "bearer-T0k3n-7f3a"

// stored returns the password and plugins columns of subscription "s" as the database holds them.
func storedColumns(t *testing.T, dsn string) string {
	t.Helper()
	conn, err := pgx.Connect(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(context.Background())
	var pw, plugins string
	if err := conn.QueryRow(context.Background(), "SELECT password, plugins FROM subscriptions WHERE id = 's'").Scan(&pw, &plugins); err != nil {
		t.Fatal(err)
	}
	return pw + " " + plugins
}

// Secrets are stored sealed, sealed again under a new key at Open, and an Open without the key
// they are under fails, naming it.
func TestSecretsKeyRotation(t *testing.T) {
	ctx := context.Background()
	dsn := schema(t)
	old, cur := newKey(t), newKey(t)
	s := open(t, dsn, postgres.Options{Secrets: secretbox.New(old)})
	sub := subscription("s", store.Policy{})
	sub.Password, sub.Plugins = password, []store.Plugin{{Name: "bearer", Config: "token: " + token + "\n"}}
	if err := s.CreateSubscription(ctx, sub); err != nil {
		t.Fatal(err)
	}
	s.Close()
	at := storedColumns(t, dsn)
	if strings.Contains(at, password) || strings.Contains(at, token) || !strings.Contains(at, old.ID()) {
		t.Fatalf("stored %q: want it sealed under %s", at, old.ID())
	}

	s = open(t, dsn, postgres.Options{Secrets: secretbox.New(cur, old)})
	s.Close()
	at = storedColumns(t, dsn)
	if strings.Contains(at, old.ID()) || !strings.Contains(at, cur.ID()) {
		t.Fatalf("stored %q after Open with a new key: want it sealed under %s only", at, cur.ID())
	}

	s = open(t, dsn, postgres.Options{Secrets: secretbox.New(cur)})
	got, err := s.GetSubscription(ctx, "s")
	s.Close()
	if err != nil || got.Password != password || len(got.Plugins) != 1 || !strings.Contains(got.Plugins[0].Config, token) {
		t.Fatalf("read back: %+v, %v", got, err)
	}

	if s, err := postgres.Open(ctx, dsn, postgres.Options{Secrets: secretbox.New(old)}); err == nil {
		s.Close()
		t.Fatal("Open without the key the secrets are under succeeded")
	} else if !strings.Contains(err.Error(), cur.ID()) {
		t.Fatalf("Open without the key: %v; want it to name key %s", err, cur.ID())
	}

	// Turned off: stored in clear again.
	s = open(t, dsn, postgres.Options{Secrets: secretbox.New(nil, cur)})
	s.Close()
	if at := storedColumns(t, dsn); !strings.Contains(at, password) || !strings.Contains(at, token) {
		t.Fatalf("stored %q with encryption turned off: want it in clear", at)
	}
}
