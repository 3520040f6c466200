package sqlite_test

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
	"github.com/webhookgw/gateway/store/sqlite"
)

// A full database: writes fail with SQLITE_FULL, Writable says so (probing for itself) until
// there is room again, and then says nil. A caller's own error is no storage failure.
func TestWritableFollowsAFullDisk(t *testing.T) {
	ctx := context.Background()
	s, err := sqlite.Open(ctx, filepath.Join(t.TempDir(), "gateway.db"), sqlite.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if err := s.Writable(ctx); err != nil {
		t.Fatalf("a new store: %v", err)
	}
	// Errors that say nothing about the storage leave it writable.
	if _, err := s.UpdateSubscription(ctx, "nope", func(*store.Subscription) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatal(err)
	}
	if err := s.Writable(ctx); err != nil {
		t.Fatalf("after a not-found update: %v", err)
	}

	if _, err := s.SetMaxPageCount(ctx, 1); err != nil { // no room beyond what it holds
		t.Fatal(err)
	}
	big := &store.Event{ID: "big", Type: "t", Payload: []byte(`{"pad":"` + strings.Repeat("x", 64<<10) + `"}`), ReceivedAt: time.Now()}
	_, err = s.IngestEvents(ctx, []*store.Event{big}, store.IngestOptions{NewID: func() string { return "d" }})
	if err == nil || !strings.Contains(err.Error(), "full") {
		t.Fatalf("ingest into a full database: %v", err)
	}
	err = s.Writable(ctx)
	if err == nil || !strings.Contains(err.Error(), "database or disk is full") {
		t.Fatalf("Writable of a full database: %v", err)
	}
	// Its own probe found the database still full (a second call within the second reports
	// the same without probing).
	if err := s.Writable(ctx); err == nil {
		t.Fatal("Writable of a full database: nil on the second call")
	}

	if _, err := s.SetMaxPageCount(ctx, 1<<30); err != nil { // room again
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for s.Writable(ctx) != nil {
		if time.Now().After(deadline) {
			t.Fatalf("Writable with room again: %v", s.Writable(ctx))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := s.IngestEvents(ctx, []*store.Event{big}, store.IngestOptions{NewID: func() string { return "d" }}); err != nil {
		t.Fatalf("ingest with room again: %v", err)
	}
	// The probe left nothing behind.
	ev, _, err := s.GetEvent(ctx, "big")
	if err != nil || len(ev.Payload) != len(big.Payload) {
		t.Fatalf("the event ingested with room again: %v", err)
	}
	if err := s.Ping(ctx); err != nil {
		t.Fatal(err)
	}
}
