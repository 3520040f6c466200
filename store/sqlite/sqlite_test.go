package sqlite_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/sqlite"
	"github.com/webhookgw/gateway/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		s, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "gateway.db"), sqlite.Options{})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}, storetest.Capabilities{SingleOwner: true})
}

func TestReopenKeepsData(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gateway db with spaces.db")
	s, err := sqlite.Open(ctx, path, sqlite.Options{Synchronous: "full"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.CreateSubscription(ctx, &store.Subscription{ID: "a", Kind: store.KindWebhook, Source: store.SourceAPI,
		URL: "https://example.com", Events: []string{"x"}, Active: true}); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	s, err = sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatalf("reopen (migrations must be idempotent): %v", err)
	}
	defer s.Close()
	got, err := s.GetSubscription(ctx, "a")
	if err != nil || got.URL != "https://example.com" {
		t.Fatalf("after reopen: %+v, %v", got, err)
	}
}

func TestOpenRefusesBadSynchronous(t *testing.T) {
	if _, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "x.db"), sqlite.Options{Synchronous: "off"}); err == nil {
		t.Fatal("synchronous=off accepted")
	}
}

func TestOpenRefusesInMemory(t *testing.T) {
	for _, dsn := range []string{":memory:", "file::memory:?cache=shared", "file:x.db?mode=memory"} {
		if s, err := sqlite.Open(context.Background(), dsn, sqlite.Options{}); err == nil {
			s.Close()
			t.Errorf("%q accepted", dsn)
		}
	}
}

// One process per file: a second Open of the same file fails, naming the file and the process
// that holds it, until the first Store is closed.
func TestOpenTakesTheFile(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	path := filepath.Join(dir, "gateway.db")
	first, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer first.Close()
	// The same file by another name is the same file.
	for _, p := range []string{path, filepath.Join(dir, ".", "gateway.db")} {
		second, err := sqlite.Open(ctx, p, sqlite.Options{})
		if err == nil {
			second.Close()
			t.Fatalf("a second Open of %s succeeded while the first is open", p)
		}
		msg := err.Error()
		if !errors.Is(err, sqlite.ErrInUse) || !strings.Contains(msg, path) ||
			!strings.Contains(msg, "process "+strconv.Itoa(os.Getpid())) || !strings.Contains(msg, path+".lock") {
			t.Fatalf("second Open: %v; want ErrInUse naming %s, its lock file and this process's id", err, path)
		}
	}
	if got, err := os.ReadFile(path + ".lock"); err != nil || strings.TrimSpace(string(got)) != strconv.Itoa(os.Getpid()) {
		t.Fatalf("lock file holds %q (%v), want this process's id", got, err)
	}
	// The first Store is untouched by the refused Open.
	if err := first.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	second, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatalf("Open after Close: %v", err)
	}
	if err := second.Close(); err != nil {
		t.Fatal(err)
	}
}

// A failed Open releases the lock it took.
func TestFailedOpenReleasesTheLock(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "gateway.db")
	if err := os.WriteFile(path, []byte("not a database, but long enough to have a header of its own....."+
		"................................................................"), 0o644); err != nil {
		t.Fatal(err)
	}
	if s, err := sqlite.Open(ctx, path, sqlite.Options{}); err == nil {
		s.Close()
		t.Fatal("Open of a file that is not a database succeeded")
	}
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	s, err := sqlite.Open(ctx, path, sqlite.Options{})
	if err != nil {
		t.Fatalf("Open after a failed one: %v", err)
	}
	s.Close()
}
