// Package storetest is the conformance suite every Store backend runs: the behaviour the rest of
// the gateway relies on, written once.
package storetest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/webhookgw/gateway/store"
)

// Opener returns a new, empty store for one test. The suite closes it.
type Opener func(t *testing.T) store.Store

// Capabilities say what kind of backend runs the suite, so that the cases a backend's design
// rules out are skipped rather than registered for it to fail.
type Capabilities struct {
	// SingleOwner means one process owns the store (SQLite): RecoverLeases releases every
	// lease. A store that several replicas share lets a lost replica's leases expire instead.
	SingleOwner bool
	// SharedRateLimit means the claim enforces subscriptions' rate limits itself, so that they
	// hold across the replicas that share the store (PostgreSQL). A store that one process owns
	// leaves them to that process's engine.
	SharedRateLimit bool
}

type testCase struct {
	name string
	fn   func(t *testing.T, s store.Store)
}

// Run runs the whole suite against the stores open makes: every case that caps allow.
func Run(t *testing.T, open Opener, caps Capabilities) {
	tests := []testCase{
		{"CreateGetRoundTrip", testCreateGet},
		{"CreateDuplicateID", testCreateDuplicate},
		{"GetMissing", testGetMissing},
		{"ListPagesInCreationOrder", testListPages},
		{"UpdateAppliesChange", testUpdate},
		{"UpdateErrorAborts", testUpdateAbort},
		{"UpdateIsAtomic", testUpdateAtomic},
		{"Delete", testDelete},
		{"SyncCreatesUpdatesDeletes", testSync},
		{"SyncNeverTouchesAPISubscriptions", testSyncConflict},
		{"PolicyRoundTrips", testPolicyRoundTrips},
		{"FanOutFollowsEveryChange", testFanOutFollowsEveryChange},
		{"VersionBumpsOnDeliveryChanges", testVersionBumps},
		{"OutcomesKeepVersionAndUpdatedAt", testOutcomesKeepVersion},
		{"GenerationGrows", testGenerationGrows},
		{"IngestFansOut", testIngestFanOut},
		{"IngestDuplicates", testIngestDuplicates},
		{"IngestLeasesAtBirth", testIngestLeasesAtBirth},
		{"GetEventKeepsPayloadAndTrace", testGetEvent},
		{"DeliveryLookupsMissing", testDeliveryLookupsMissing},
		{"ClaimDueLongestFirst", testClaimDue},
		{"ClaimRespectsLease", testClaimLease},
		{"ClaimNamedSubscriptionsLimitInactive", testClaimNamedLimitInactive},
		{"ClaimFairAcrossSubscriptions", testClaimFair},
		{"ClaimResultNextDue", testClaimNextDue},
		{"ClaimConcurrentNeverTwice", testClaimConcurrent},
		{"ClaimFIFOHeadOnly", testFIFOHeadOnly},
		{"ClaimFIFOFailingHeadBlocks", testFIFOFailingHeadBlocks},
		{"ClaimFIFOBatchKeepsIngestOrder", testFIFOBatchOrder},
		{"ReleaseDeliveries", testReleaseDeliveries},
		{"ReleaseFenced", testReleaseFenced},
		{"ExtendLeases", testExtendLeases},
		{"ExtendAfterCompletionIsLost", testExtendAfterCompletion},
		{"CompleteSuccess", testCompleteSuccess},
		{"CompleteRetryThenFail", testCompleteRetryThenFail},
		{"CompleteErrorStateAndDisable", testCompleteErrorState},
		{"CompleteErrorStateInOneCall", testCompleteErrorStateInOneCall},
		{"CompleteGoneDeactivates", testCompleteGone},
		{"CompleteDeletedSubscription", testCompleteDeletedSubscription},
		{"CompleteRetryAfterDeleteStaysFailed", testCompleteRetryAfterDelete},
		{"CompleteSubscriptionDeletedOutcome", testCompleteSubscriptionDeletedOutcome},
		{"CompleteStaleTokenRefused", testCompleteStale},
		{"DueSubscriptions", testDueSubscriptions},
		{"PausedNotClaimedOrCounted", testPaused},
		{"PausedByGoneOutcome", testPausedByGone},
		{"ListDeliveriesNewestFirst", testListDeliveries},
		{"RetryDelivery", testRetryDelivery},
		{"RetryLeasedDelivery", testRetryLeased},
		{"RetryLeasedServedByNextRound", testRetryLeasedServedByNextRound},
		{"RetryLeasedThenDeleted", testRetryLeasedThenDeleted},
		{"Prune", testPrune},
		{"PruneInBatches", testPruneInBatches},
		{"DeleteFailsPendingDeliveries", testDeleteFailsPending},
		{"DeleteLeavesLeasedToRound", testDeleteLeavesLeased},
		{"Stats", testStats},
		{"Ping", func(t *testing.T, s store.Store) {
			if err := s.Ping(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
		{"WritableWhenWritesWork", func(t *testing.T, s store.Store) {
			// A write refused for its own reasons says nothing about the storage.
			_, err := s.UpdateSubscription(context.Background(), "missing", func(*store.Subscription) error { return nil })
			if !errors.Is(err, store.ErrNotFound) {
				t.Fatal(err)
			}
			if err := s.Writable(context.Background()); err != nil {
				t.Fatal(err)
			}
		}},
	}
	tests = append(tests, opsCases...)
	if caps.SingleOwner {
		tests = append(tests, testCase{"RecoverLeasesReleasesAll", testRecoverLeasesReleasesAll})
	}
	if caps.SharedRateLimit {
		tests = append(tests, testCase{"ClaimSharedRateLimit", testSharedRateLimit})
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := open(t)
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, s)
		})
	}
}

var base = time.Date(2026, 1, 2, 3, 4, 5, 678_000_000, time.UTC)

func sample(id string, created time.Time) *store.Subscription {
	return &store.Subscription{
		ID:      id,
		Kind:    store.KindWebhook,
		Source:  store.SourceAPI,
		URL:     "https://example.com/hooks/" + id,
		Events:  []string{"transaction.state.updated"},
		Headers: map[string]string{"X-Team": "billing"},
		Plugins: []store.Plugin{{Name: "bearer", Config: "token: t\n"}},
		Active:  true,
		// Times come back in UTC with nanosecond precision.
		CreatedAt: created,
		UpdatedAt: created,
	}
}

// stored is sample(id, created) as a new subscription is stored: at version 1.
func stored(id string, created time.Time) *store.Subscription {
	sub := sample(id, created)
	sub.Version = 1
	return sub
}

func mustCreate(t *testing.T, s store.Store, sub *store.Subscription) {
	t.Helper()
	if err := s.CreateSubscription(context.Background(), sub); err != nil {
		t.Fatalf("CreateSubscription(%s): %v", sub.ID, err)
	}
}

func equal(t *testing.T, got, want *store.Subscription) {
	t.Helper()
	g, _ := json.Marshal(got)
	w, _ := json.Marshal(want)
	if string(g) != string(w) {
		t.Fatalf("subscription differs\n got: %s\nwant: %s", g, w)
	}
}

func testCreateGet(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := sample("a", base)
	want.Kind = store.KindRegistration
	want.Events = []string{store.AllEvents}
	want.Headers = nil
	want.Plugins = nil
	want.RequestID, want.SourceSenderID = "req-1", "sender-1"
	want.Username, want.Password = "jroll", "1234"
	deact, detected := base.Add(time.Hour), base.Add(time.Minute)
	want.Active, want.DeactivatedAt = false, &deact
	want.InErrorState, want.ErrorStateReason, want.DetectedErrorStateAt = true, "HTTP 500 from target", &detected
	mustCreate(t, s, want)
	want.Version = 1 // a new subscription's
	got, err := s.GetSubscription(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, got, want)

	full := sample("b", base)
	mustCreate(t, s, full)
	full.Version = 1
	got, err = s.GetSubscription(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, got, full)
}

func testCreateDuplicate(t *testing.T, s store.Store) {
	mustCreate(t, s, sample("a", base))
	err := s.CreateSubscription(context.Background(), sample("a", base))
	if !errors.Is(err, store.ErrExists) {
		t.Fatalf("second create: got %v, want ErrExists", err)
	}
}

func testGetMissing(t *testing.T, s store.Store) {
	_, err := s.GetSubscription(context.Background(), "nope")
	if !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("got %v, want ErrNotFound", err)
	}
}

func testListPages(t *testing.T, s store.Store) {
	ctx := context.Background()
	// Created out of id order; two share a creation time, ordered by id.
	mustCreate(t, s, sample("c", base.Add(2*time.Second)))
	mustCreate(t, s, sample("b", base))
	mustCreate(t, s, sample("a", base))
	mustCreate(t, s, sample("d", base.Add(3*time.Second)))
	var ids []string
	after := ""
	for page := 0; page < 10; page++ {
		subs, err := s.ListSubscriptions(ctx, store.ListOptions{Limit: 3, After: after})
		if err != nil {
			t.Fatal(err)
		}
		if len(subs) == 0 {
			break
		}
		for _, sub := range subs {
			ids = append(ids, sub.ID)
		}
		after = subs[len(subs)-1].ID
	}
	if fmt.Sprint(ids) != "[a b c d]" {
		t.Fatalf("listed %v, want [a b c d]", ids)
	}
	if _, err := s.ListSubscriptions(ctx, store.ListOptions{After: "missing"}); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after a missing id: got %v, want ErrNotFound", err)
	}
}

func testUpdate(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, sample("a", base))
	later := base.Add(time.Minute)
	got, err := s.UpdateSubscription(ctx, "a", func(sub *store.Subscription) error {
		sub.URL = "https://example.org/new"
		sub.Headers = nil
		sub.ID, sub.Source, sub.CreatedAt, sub.Version = "hijack", store.SourceFile, later, 99 // ignored
		sub.UpdatedAt = later
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	want := stored("a", base)
	// The store sets the version: one more, as the URL changed.
	want.URL, want.Headers, want.UpdatedAt, want.Version = "https://example.org/new", nil, later, 2
	equal(t, got, want)
	stored, err := s.GetSubscription(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, stored, want)
	if _, err := s.UpdateSubscription(ctx, "missing", func(*store.Subscription) error { return nil }); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("update missing: got %v, want ErrNotFound", err)
	}
}

func testUpdateAbort(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, sample("a", base))
	stop := errors.New("stop")
	_, err := s.UpdateSubscription(ctx, "a", func(sub *store.Subscription) error {
		sub.URL = "https://changed.example"
		return stop
	})
	if !errors.Is(err, stop) {
		t.Fatalf("got %v, want the change's error", err)
	}
	got, _ := s.GetSubscription(ctx, "a")
	equal(t, got, stored("a", base))
}

// testUpdateAtomic runs concurrent read-modify-write updates; none may be lost.
func testUpdateAtomic(t *testing.T, s store.Store) {
	ctx := context.Background()
	sub := sample("a", base)
	sub.Headers = map[string]string{}
	mustCreate(t, s, sub)
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := s.UpdateSubscription(ctx, "a", func(sub *store.Subscription) error {
				if sub.Headers == nil {
					sub.Headers = map[string]string{}
				}
				sub.Headers[fmt.Sprintf("X-%d", i)] = "v"
				return nil
			})
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	got, _ := s.GetSubscription(ctx, "a")
	if len(got.Headers) != n {
		t.Fatalf("%d of %d concurrent updates kept", len(got.Headers), n)
	}
	// Each changed the headers, so each bumped the version once.
	if got.Version != n+1 {
		t.Fatalf("version %d after %d updates of the headers, want %d", got.Version, n, n+1)
	}
}

func testDelete(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, sample("a", base))
	if err := s.DeleteSubscription(ctx, "a", base); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSubscription(ctx, "a"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("after delete: got %v, want ErrNotFound", err)
	}
	if err := s.DeleteSubscription(ctx, "a", base); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("second delete: got %v, want ErrNotFound", err)
	}
	if _, err := s.SyncFileSubscriptions(ctx, []*store.Subscription{declared("file", "https://file.example")}, base); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteSubscription(ctx, "file", base); !errors.Is(err, store.ErrOwnedByFile) {
		t.Fatalf("deleting a declared subscription: got %v, want ErrOwnedByFile", err)
	}
	if _, err := s.GetSubscription(ctx, "file"); err != nil {
		t.Fatalf("a refused delete removed the declared subscription: %v", err)
	}
}

func declared(id, url string) *store.Subscription {
	return &store.Subscription{ID: id, URL: url, Events: []string{"task.state.updated"}}
}

func testSync(t *testing.T, s store.Store) {
	ctx := context.Background()
	res, err := s.SyncFileSubscriptions(ctx, []*store.Subscription{
		declared("billing", "https://billing.example/hooks"),
		declared("audit", "https://audit.example/hooks"),
	}, base)
	if err != nil {
		t.Fatal(err)
	}
	if res != (store.SyncResult{Created: 2}) {
		t.Fatalf("first sync: %+v", res)
	}
	got, err := s.GetSubscription(ctx, "billing")
	if err != nil {
		t.Fatal(err)
	}
	if got.Source != store.SourceFile || got.Kind != store.KindWebhook || !got.Active || !got.CreatedAt.Equal(base) ||
		got.Version != 1 {
		t.Fatalf("synced subscription: %+v", got)
	}

	// State set at run time survives a sync that changes the declaration.
	if _, err := s.UpdateSubscription(ctx, "billing", func(sub *store.Subscription) error {
		sub.InErrorState, sub.ErrorStateReason = true, "connection refused"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	later := base.Add(time.Hour)
	changed := declared("billing", "https://billing.example/v2")
	changed.Headers = map[string]string{"X-Team": "billing"}
	res, err = s.SyncFileSubscriptions(ctx, []*store.Subscription{changed, declared("audit", "https://audit.example/hooks")}, later)
	if err != nil {
		t.Fatal(err)
	}
	if res != (store.SyncResult{Updated: 1}) {
		t.Fatalf("second sync: %+v", res)
	}
	got, _ = s.GetSubscription(ctx, "billing")
	// The state change through the API kept version 1; the new declaration is version 2.
	if got.URL != "https://billing.example/v2" || got.Headers["X-Team"] != "billing" || !got.InErrorState ||
		!got.UpdatedAt.Equal(later) || !got.CreatedAt.Equal(base) || got.Version != 2 {
		t.Fatalf("after update sync: %+v", got)
	}

	res, err = s.SyncFileSubscriptions(ctx, []*store.Subscription{changed}, later)
	if err != nil {
		t.Fatal(err)
	}
	if res != (store.SyncResult{Deleted: 1}) {
		t.Fatalf("third sync: %+v", res)
	}
	if _, err := s.GetSubscription(ctx, "audit"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("removed from the file but still there: %v", err)
	}
}

func testSyncConflict(t *testing.T, s store.Store) {
	ctx := context.Background()
	mustCreate(t, s, sample("mine", base))
	if _, err := s.SyncFileSubscriptions(ctx, nil, base); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetSubscription(ctx, "mine"); err != nil {
		t.Fatalf("an empty sync removed an API subscription: %v", err)
	}
	_, err := s.SyncFileSubscriptions(ctx, []*store.Subscription{
		declared("other", "https://other.example"),
		declared("mine", "https://taken.example"),
	}, base)
	if !errors.Is(err, store.ErrOwnedByAPI) {
		t.Fatalf("got %v, want ErrOwnedByAPI", err)
	}
	got, _ := s.GetSubscription(ctx, "mine")
	equal(t, got, stored("mine", base))
	if _, err := s.GetSubscription(ctx, "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed sync left a change behind: %v", err)
	}
}

// testPolicyRoundTrips stores a subscription's delivery policy through create, update and the
// file sync, and reads it back from Get and List.
func testPolicyRoundTrips(t *testing.T, s store.Store) {
	ctx := context.Background()
	want := sample("a", base)
	want.Policy = store.Policy{MaxInFlight: 4, RateLimit: 2.5, Ordering: store.FIFO}
	mustCreate(t, s, want)
	want.Version = 1
	got, err := s.GetSubscription(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	equal(t, got, want)
	list, err := s.ListSubscriptions(ctx, store.ListOptions{})
	if err != nil || len(list) != 1 {
		t.Fatalf("ListSubscriptions: %d, %v", len(list), err)
	}
	equal(t, list[0], want)

	// Changed, then back to the defaults.
	for _, p := range []store.Policy{{MaxInFlight: 1, RateLimit: 0.25}, {}} {
		got, err := s.UpdateSubscription(ctx, "a", func(sub *store.Subscription) error {
			sub.Policy = p
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want.Policy = p
		want.Version++
		equal(t, got, want)
		got, _ = s.GetSubscription(ctx, "a")
		equal(t, got, want)
	}

	// A declared subscription's policy is part of its declaration.
	decl := declared("file", "https://file.example")
	decl.Policy = store.Policy{MaxInFlight: 1, Ordering: store.FIFO}
	sync := func(d *store.Subscription, want store.SyncResult) {
		t.Helper()
		res, err := s.SyncFileSubscriptions(ctx, []*store.Subscription{d}, base)
		if err != nil {
			t.Fatal(err)
		}
		if res != want {
			t.Fatalf("sync of policy %+v: %+v, want %+v", d.Policy, res, want)
		}
		got, err := s.GetSubscription(ctx, d.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Policy != d.Policy {
			t.Fatalf("synced policy: got %+v, want %+v", got.Policy, d.Policy)
		}
	}
	sync(decl, store.SyncResult{Created: 1})
	sync(decl, store.SyncResult{})
	changed := declared("file", "https://file.example")
	changed.Policy = store.Policy{RateLimit: 10}
	sync(changed, store.SyncResult{Updated: 1})
	if got, _ := s.GetSubscription(ctx, "file"); got.Version != 2 {
		t.Fatalf("a changed policy in the file: version %d, want 2", got.Version)
	}
}

// testVersionBumps changes one thing at a time through UpdateSubscription: what a delivery is
// sent with bumps the version once; state does not.
func testVersionBumps(t *testing.T, s store.Store) {
	ctx := context.Background()
	sub := sample("a", base)
	sub.Username, sub.Password = "jroll", "1234"
	mustCreate(t, s, sub)
	for _, tc := range []struct {
		what   string
		bumps  bool
		change func(*store.Subscription)
	}{
		{"nothing", false, func(*store.Subscription) {}},
		{"URL", true, func(sub *store.Subscription) { sub.URL = "https://example.org/v2" }},
		{"Events", true, func(sub *store.Subscription) { sub.Events = append(sub.Events, "y") }},
		{"Headers", true, func(sub *store.Subscription) { sub.Headers = map[string]string{"X-Team": "audit"} }},
		{"Plugins", true, func(sub *store.Subscription) { sub.Plugins = append(sub.Plugins, store.Plugin{Name: "hmac"}) }},
		{"Username", true, func(sub *store.Subscription) { sub.Username = "other" }},
		{"Password", true, func(sub *store.Subscription) { sub.Password = "5678" }},
		{"Policy.MaxInFlight", true, func(sub *store.Subscription) { sub.Policy.MaxInFlight = 2 }},
		{"Policy.RateLimit", true, func(sub *store.Subscription) { sub.Policy.RateLimit = 5 }},
		{"Policy.Ordering", true, func(sub *store.Subscription) { sub.Policy.Ordering = store.FIFO }},
		{"UpdatedAt", false, func(sub *store.Subscription) { sub.UpdatedAt = base.Add(time.Hour) }},
		{"RequestID", false, func(sub *store.Subscription) { sub.RequestID = "req-2" }},
		{"error state", false, func(sub *store.Subscription) {
			sub.InErrorState, sub.ErrorStateReason, sub.DetectedErrorStateAt, sub.ConsecutiveFailures = true, "HTTP 500 from target", ptr(base), 3
		}},
		{"deactivation", false, func(sub *store.Subscription) { sub.Active, sub.DeactivatedAt = false, ptr(base) }},
		{"reactivation", false, store.Reactivate},
	} {
		before, err := s.GetSubscription(ctx, "a")
		if err != nil {
			t.Fatal(err)
		}
		got, err := s.UpdateSubscription(ctx, "a", func(sub *store.Subscription) error {
			tc.change(sub)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		want := before.Version
		if tc.bumps {
			want++
		}
		stored, _ := s.GetSubscription(ctx, "a")
		if got.Version != want || stored.Version != want {
			t.Errorf("changing %s: version %d (stored %d), was %d; want %d", tc.what, got.Version, stored.Version, before.Version, want)
		}
	}
}
