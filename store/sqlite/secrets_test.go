package sqlite_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/secretbox"
	"github.com/webhookgw/gateway/store/sqlite"
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
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), sqlite.Options{Secrets: box})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.Capabilities{SingleOwner: true})
}

// The secrets the tests store, each unlike anything else in the file.
var secrets = []string{"pw-Zq81xK2v", "bearer-T0k3n-7f3a", "whsec_c2VjcmV0LWhtYWMta2V5LTEyMzQ1Njc4OTA=", "client-S3cr3t-99ad", "pw-rotated-Lm40"}

// storeSecrets writes every kind of secret through every write path: a registration's
// password, a webhook's plugins, a declared subscription's plugins, an update.
func storeSecrets(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	reg := &store.Subscription{ID: "reg", Kind: store.KindRegistration, Source: store.SourceAPI, URL: "https://example.com/cb",
		Events: []string{store.AllEvents}, Username: "jroll", Password: secrets[0], Active: true, CreatedAt: now, UpdatedAt: now}
	hook := &store.Subscription{ID: "hook", Kind: store.KindWebhook, Source: store.SourceAPI, URL: "https://example.com/hooks",
		Events: []string{"x"}, Active: true, CreatedAt: now, UpdatedAt: now, Plugins: []store.Plugin{
			{Name: "bearer", Config: "token: " + secrets[1] + "\n"},
			{Name: "hmac", Config: "secret: " + secrets[2] + "\n"},
		}}
	for _, sub := range []*store.Subscription{reg, hook} {
		if err := s.CreateSubscription(ctx, sub); err != nil {
			t.Fatal(err)
		}
	}
	declared := &store.Subscription{ID: "file", URL: "https://example.com/file", Events: []string{"x"}, Plugins: []store.Plugin{
		{Name: "oauth2", Config: "token_url: https://auth.example.com/token\nclient_id: gw\nclient_secret: " + secrets[3] + "\n"},
	}}
	if _, err := s.SyncFileSubscriptions(ctx, []*store.Subscription{declared}, now); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateSubscription(ctx, "reg", func(sub *store.Subscription) error {
		sub.Password = secrets[4]
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// checkSecrets reads the secrets back through the store: in clear.
func checkSecrets(t *testing.T, s store.Store) {
	t.Helper()
	ctx := context.Background()
	reg, err := s.GetSubscription(ctx, "reg")
	if err != nil || reg.Password != secrets[4] || reg.Username != "jroll" {
		t.Fatalf("registration read back: %+v, %v", reg, err)
	}
	subs, err := s.ListSubscriptions(ctx, store.ListOptions{})
	if err != nil || len(subs) != 3 {
		t.Fatalf("list: %d, %v", len(subs), err)
	}
	var configs []string
	for _, sub := range subs {
		for _, p := range sub.Plugins {
			configs = append(configs, p.Name+": "+p.Config)
		}
	}
	slices.Sort(configs)
	want := []string{
		"bearer: token: " + secrets[1] + "\n",
		"hmac: secret: " + secrets[2] + "\n",
		"oauth2: token_url: https://auth.example.com/token\nclient_id: gw\nclient_secret: " + secrets[3] + "\n",
	}
	if strings.Join(configs, "|") != strings.Join(want, "|") {
		t.Fatalf("plugins read back:\n%q\nwant\n%q", configs, want)
	}
}

// fileBytes returns the bytes of the database file and its companions (-wal, -shm).
func fileBytes(t *testing.T, path string) []byte {
	t.Helper()
	files, err := filepath.Glob(path + "*")
	if err != nil || len(files) == 0 {
		t.Fatalf("no database files at %s: %v", path, err)
	}
	var all []byte
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		all = append(all, b...)
	}
	return all
}

// plaintextIn returns the secrets found in b.
func plaintextIn(b []byte) []string {
	var found []string
	for _, s := range secrets {
		if bytes.Contains(b, []byte(s)) {
			found = append(found, s)
		}
	}
	return found
}

// columns returns every subscription's password and plugins columns as stored, read with a
// connection of its own that knows nothing of the key.
func columns(t *testing.T, path string) map[string][2]string {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rows, err := db.Query("SELECT id, password, plugins FROM subscriptions")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	out := map[string][2]string{}
	for rows.Next() {
		var id, password, plugins string
		if err := rows.Scan(&id, &password, &plugins); err != nil {
			t.Fatal(err)
		}
		out[id] = [2]string{password, plugins}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// sealedUnder checks that every stored secret is sealed under key id, plugin names in sight.
func sealedUnder(t *testing.T, path, id string) {
	t.Helper()
	prefix := "enc:v1:" + id + ":"
	for sub, cols := range columns(t, path) {
		if sub == "reg" && !strings.HasPrefix(cols[0], prefix) {
			t.Errorf("%s: password stored as %q, want it sealed under %s", sub, cols[0], id)
		}
		if sub != "reg" && cols[0] != "" {
			t.Errorf("%s: password %q, want empty", sub, cols[0])
		}
		var plugins []store.Plugin
		if err := json.Unmarshal([]byte(cols[1]), &plugins); err != nil {
			t.Fatalf("%s: plugins column %q: %v", sub, cols[1], err)
		}
		for _, p := range plugins {
			if p.Name == "" || !strings.HasPrefix(p.Config, prefix) {
				t.Errorf("%s: plugin stored as %+v, want its name and its config sealed under %s", sub, p, id)
			}
		}
	}
}

func open(t *testing.T, path string, opts sqlite.Options) *sqlite.Store {
	t.Helper()
	s, err := sqlite.Open(context.Background(), path, opts)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// With a key, the file on disk holds no secret in clear, in the database or its WAL, while the
// store is open and after it closes; through the store they read back in clear.
func TestSecretsEncryptedAtRest(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	key := newKey(t)
	s := open(t, path, sqlite.Options{Secrets: secretbox.New(key)})
	storeSecrets(t, s)
	checkSecrets(t, s)
	if found := plaintextIn(fileBytes(t, path)); len(found) > 0 {
		t.Errorf("the open database's files hold %q in clear", found)
	}
	sealedUnder(t, path, key.ID())
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if found := plaintextIn(fileBytes(t, path)); len(found) > 0 {
		t.Errorf("the database file holds %q in clear", found)
	}
	s = open(t, path, sqlite.Options{Secrets: secretbox.New(key)})
	defer s.Close()
	checkSecrets(t, s)
}

// Turning encryption on for a database that has secrets in clear seals them at Open, and
// leaves no copy of them in the file.
func TestSecretsEncryptedWhenTurnedOn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	s := open(t, path, sqlite.Options{})
	storeSecrets(t, s)
	s.Close()
	for _, s := range secrets[1:] { // the scan below sees plaintext where there is some
		if !bytes.Contains(fileBytes(t, path), []byte(s)) {
			t.Fatalf("%q is not in the file in clear without a key", s)
		}
	}
	if cols := columns(t, path); cols["reg"][0] != secrets[4] {
		t.Fatalf("without a key the password is stored as %q, want it in clear", cols["reg"][0])
	}
	key := newKey(t)
	s = open(t, path, sqlite.Options{Secrets: secretbox.New(key)})
	checkSecrets(t, s)
	s.Close()
	sealedUnder(t, path, key.ID())
	for _, s := range []string{secrets[1], secrets[2], secrets[3], secrets[4]} {
		if bytes.Contains(fileBytes(t, path), []byte(s)) {
			t.Errorf("%q is still in the file after it was sealed", s)
		}
	}
}

// Rotation: a value under a key the store was not given stops Open with an error naming the
// key's id; with the old key listed as previous, Open seals everything under the new one,
// after which the old key is no longer needed.
func TestSecretsKeyRotation(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	oldKey, newK := newKey(t), newKey(t)
	s := open(t, path, sqlite.Options{Secrets: secretbox.New(oldKey)})
	storeSecrets(t, s)
	s.Close()

	for name, box := range map[string]*secretbox.Box{"new key only": secretbox.New(newK), "no key": nil} {
		_, err := sqlite.Open(context.Background(), path, sqlite.Options{Secrets: box})
		if err == nil {
			t.Fatalf("%s: Open succeeded on secrets under a key it was not given", name)
		}
		msg := err.Error()
		if !strings.Contains(msg, "key "+oldKey.ID()) || !strings.Contains(msg, "store.previous_encryption_keys") ||
			!strings.Contains(msg, "3 subscriptions") {
			t.Errorf("%s: error does not name the key it needs: %v", name, msg)
		}
		if found := plaintextIn([]byte(msg)); len(found) > 0 {
			t.Errorf("%s: error shows secrets: %v", name, msg)
		}
	}
	sealedUnder(t, path, oldKey.ID()) // a failed Open changed nothing

	s = open(t, path, sqlite.Options{Secrets: secretbox.New(newK, oldKey)})
	checkSecrets(t, s)
	s.Close()
	sealedUnder(t, path, newK.ID())

	s = open(t, path, sqlite.Options{Secrets: secretbox.New(newK)})
	checkSecrets(t, s)
	s.Close()

	// Turning encryption off: no current key, the last one listed as previous.
	s = open(t, path, sqlite.Options{Secrets: secretbox.New(nil, newK)})
	checkSecrets(t, s)
	s.Close()
	if cols := columns(t, path); cols["reg"][0] != secrets[4] {
		t.Errorf("after turning encryption off the password is stored as %q", cols["reg"][0])
	}
}

// A sealed value changed in the file, or moved to another row, stops Open: never garbage.
func TestSecretsTampered(t *testing.T) {
	path := filepath.Join(t.TempDir(), "gateway.db")
	key := newKey(t)
	s := open(t, path, sqlite.Options{Secrets: secretbox.New(key)})
	storeSecrets(t, s)
	s.Close()
	cols := columns(t, path)
	db, err := sql.Open("sqlite", "file:"+path)
	if err != nil {
		t.Fatal(err)
	}
	// The registration's password sealed value, put in the declared subscription's row.
	if _, err := db.Exec("UPDATE subscriptions SET password = ? WHERE id = 'file'", cols["reg"][0]); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err = sqlite.Open(context.Background(), path, sqlite.Options{Secrets: secretbox.New(key)})
	if err == nil || !strings.Contains(err.Error(), `subscription "file": password`) || !strings.Contains(err.Error(), "changed or moved") {
		t.Fatalf("Open of a moved sealed value: %v", err)
	}
}
