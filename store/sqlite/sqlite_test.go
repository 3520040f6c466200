package sqlite_test

import (
	"context"
	"path/filepath"
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
