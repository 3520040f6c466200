// Package store defines the gateway's durable state behind the Store interface. Backends live
// in subpackages (sqlite, and postgres for several replicas); storetest is the conformance
// suite every backend runs.
package store

import (
	"context"
	"errors"
	"maps"
	"slices"
	"time"
)

// Errors returned by every backend, to be checked with errors.Is.
var (
	// ErrNotFound means no record has the given id.
	ErrNotFound = errors.New("store: not found")
	// ErrExists means a record with the given id already exists.
	ErrExists = errors.New("store: already exists")
	// ErrOwnedByAPI means a file sync named the id of a subscription created through the API,
	// which the sync must never touch.
	ErrOwnedByAPI = errors.New("store: subscription is owned by the API")
	// ErrOwnedByFile means the API asked to delete a subscription that gateway.yaml declares,
	// which only the file's sync may remove.
	ErrOwnedByFile = errors.New("store: subscription is declared in the file")
	// ErrSubscriptionGone means a delivery's subscription has been deleted.
	ErrSubscriptionGone = errors.New("store: the subscription was deleted")
)

// Source says who owns a subscription.
type Source string

const (
	// SourceAPI subscriptions are created and changed through the management API.
	SourceAPI Source = "api"
	// SourceFile subscriptions are declared in gateway.yaml and changed only by its sync.
	SourceFile Source = "file"
)

// Kind says through which dialect a subscription was created.
type Kind string

const (
	// KindWebhook is a dialect-1 webhook (POST /v1/webhooks) or a declared subscription.
	KindWebhook Kind = "webhook"
	// KindRegistration is a dialect-2 registration (POST /api/WebhookRegistrations).
	KindRegistration Kind = "registration"
)

// AllEvents is the event type that, as a subscription's only one, means it receives every type.
const AllEvents = "*"

// Subscription is one webhook target and its state.
type Subscription struct {
	ID     string
	Kind   Kind
	Source Source
	URL    string
	// Events are the types delivered; []string{AllEvents} means every type.
	Events []string
	// Headers are sent with every delivery; nil when there are none.
	Headers map[string]string
	// Plugins prepare every attempt, in order.
	Plugins []Plugin

	// Registration fields (dialect 2); empty for webhooks.
	RequestID      string
	SourceSenderID string
	Username       string
	Password       string

	Active               bool
	DeactivatedAt        *time.Time
	InErrorState         bool
	ErrorStateReason     string
	DetectedErrorStateAt *time.Time
	// ConsecutiveFailures counts failed attempts since the last success.
	ConsecutiveFailures int

	// Policy is how the engine delivers to this subscription.
	Policy Policy

	// Version grows whenever what a delivery is sent with changes: URL, Events, Headers,
	// Plugins, Username, Password or Policy.
	// Backends set it; delivery outcomes never change it.
	Version int64

	CreatedAt time.Time
	// UpdatedAt is when the subscription was last changed through the API or the file sync;
	// delivery outcomes (error state, failure counts) do not move it.
	UpdatedAt time.Time
}

// Ordering says in which order a subscription's deliveries are made.
type Ordering string

const (
	// Unordered deliveries run concurrently, up to the subscription's in-flight limit.
	Unordered Ordering = ""
	// FIFO deliveries run one at a time in ingest order; a failing one blocks those after it
	// until it succeeds or fails for good.
	FIFO Ordering = "fifo"
)

// Policy is a subscription's own delivery policy. Zero values mean the gateway's defaults.
type Policy struct {
	// MaxInFlight bounds the subscription's HTTP attempts in flight at once; 0 is
	// delivery.max_in_flight_per_subscription.
	MaxInFlight int
	// RateLimit bounds its attempts per second (a token bucket; excess waits); 0 is no limit.
	RateLimit float64
	Ordering  Ordering
}

// Plugin is a plugin's name and its configuration as YAML text, the form its factory decodes.
type Plugin struct {
	Name   string `json:"name"`
	Config string `json:"config,omitempty"`
}

// ListOptions pages through a list ordered by creation time.
type ListOptions struct {
	// Limit is the most records returned; 0 means a backend default of 100.
	Limit int
	// After is the id of the last record of the previous page; empty starts at the beginning.
	After string
}

// SyncResult counts what a file sync changed.
type SyncResult struct {
	Created, Updated, Deleted int
}

// Store is the gateway's durable state. Implementations are safe for concurrent use.
type Store interface {
	// CreateSubscription stores s, which must have an ID; ErrExists if the ID is taken.
	CreateSubscription(ctx context.Context, s *Subscription) error
	// GetSubscription returns the subscription with id, or ErrNotFound.
	GetSubscription(ctx context.Context, id string) (*Subscription, error)
	// ListSubscriptions returns subscriptions oldest first. With opts.After naming an id that
	// does not exist it returns ErrNotFound.
	ListSubscriptions(ctx context.Context, opts ListOptions) ([]*Subscription, error)
	// UpdateSubscription reads the subscription with id, passes it to change, and stores what
	// change left in it, in one transaction: no other update comes in between. An error from
	// change aborts the update and is returned as it is. The ID, Source and CreatedAt cannot
	// be changed.
	UpdateSubscription(ctx context.Context, id string, change func(*Subscription) error) (*Subscription, error)
	// DeleteSubscription removes the API-owned subscription with id and fails its pending
	// deliveries that are not leased at now; a leased one is left to its round, whose
	// completion records what happened. It returns ErrNotFound, or ErrOwnedByFile for a
	// declared one (left as it is).
	DeleteSubscription(ctx context.Context, id string, now time.Time) error
	// SyncFileSubscriptions makes the file-owned subscriptions match subs, in one transaction:
	// each is created, or updated in URL, Events, Headers and Plugins (its state is kept);
	// file-owned ones not in subs are deleted. API-owned subscriptions are never touched: an
	// id in subs that one has fails the whole sync with ErrOwnedByAPI.
	SyncFileSubscriptions(ctx context.Context, subs []*Subscription, now time.Time) (SyncResult, error)

	// IngestEvents stores events in one transaction and, for each one whose id is new, a
	// pending delivery due at once (at its ReceivedAt) for every active subscription whose
	// events match its type; opts.Lease may lease some of them at birth. An id seen before, in
	// the store or earlier in events, is a duplicate: nothing is stored for it. Results follow
	// events.
	IngestEvents(ctx context.Context, events []*Event, opts IngestOptions) ([]IngestResult, error)
	// ClaimDeliveries leases, for each subscription in opts, up to its limit of its due pending
	// deliveries that are not paused and not leased (or whose lease has expired), the longest
	// due first (a fifo subscription: only its oldest pending delivery, when that one is due
	// and not leased). Each claim gets a new token. The result also says, for each
	// subscription whose claim came short, when its next unleased delivery is due.
	ClaimDeliveries(ctx context.Context, opts ClaimOptions) (ClaimResult, error)
	// CompleteDeliveries records outcomes in one transaction: their attempts, each delivery's
	// new status (which ends its lease), and each subscription's state through ApplyOutcome.
	// An outcome applies only while its token is the delivery's (the lease was not taken over):
	// a stale outcome's attempts are still recorded and counted, as they happened, but nothing
	// else changes; its delivery id is returned in stale. A delivery whose subscription has
	// been deleted meanwhile is failed instead of scheduled again. A retry asked for while the
	// round was in flight (RetryDelivery) makes the delivery pending and due at now.
	CompleteDeliveries(ctx context.Context, outcomes []*Outcome, policy ErrorPolicy, now time.Time) (stale []string, err error)
	// ReleaseDeliveries ends the leases of claimed deliveries that were not attempted, so they
	// can be claimed again at once. A lease whose token is no longer the delivery's is left
	// alone.
	ReleaseDeliveries(ctx context.Context, leases []Lease) error
	// ExtendLeases moves the leases held with these tokens to until. It returns the ids of
	// deliveries whose lease is no longer held (taken over, or finished meanwhile).
	ExtendLeases(ctx context.Context, leases []Lease, until time.Time) (lost []string, err error)
	// RecoverLeases, at start, releases the leases of processes that no longer run. A backend
	// that one process owns (SQLite) releases them all; a shared one lets them expire.
	RecoverLeases(ctx context.Context) error
	// DueSubscriptions returns, for each subscription with pending deliveries that are not
	// paused and not leased at now, when the earliest of them is due.
	DueSubscriptions(ctx context.Context, now time.Time) (map[string]time.Time, error)
	// GetEvent returns an event and its deliveries, or ErrNotFound.
	GetEvent(ctx context.Context, id string) (*Event, []*Delivery, error)
	// GetDelivery returns a delivery and its attempts, oldest first, or ErrNotFound.
	GetDelivery(ctx context.Context, id string) (*Delivery, []Attempt, error)
	// ListDeliveries returns the deliveries that filter selects, of one subscription or of all,
	// newest first (by CreatedAt, then by id). opts.After names the last delivery of the
	// previous page; ErrNotFound when no delivery has that id.
	ListDeliveries(ctx context.Context, filter DeliveryFilter, opts ListOptions) ([]*Delivery, error)
	// RetryDelivery makes a delivery pending and due at now, whatever its status. A delivery
	// whose round is in flight (leased at now) is not touched but marked: the round's
	// completion makes it due again, so that no second round runs beside the first. A
	// delivery of an inactive subscription stays paused until it is reactivated. It returns
	// ErrNotFound, or ErrSubscriptionGone when the delivery's subscription was deleted.
	RetryDelivery(ctx context.Context, id string, now time.Time) (*Delivery, error)
	// RecoverDeliveries makes every failed delivery of a subscription created in the window
	// [since, until) pending and due at now, as RetryDelivery does each one (a zero until does
	// not bound the window), and returns how many. Failed deliveries hold no lease, so none has
	// a round in flight. Those of an inactive subscription stay paused until it is
	// reactivated. It returns ErrNotFound when no subscription has the id.
	RecoverDeliveries(ctx context.Context, subscriptionID string, since, until, now time.Time) (int, error)
	// ReplayEvent stores a new delivery of a stored event to a subscription, with the id
	// deliveryID, pending, due and created at now: a delivery of its own, listed under the
	// event and the subscription. A delivery to an inactive subscription is paused until it is
	// reactivated. It returns ErrNotFound when the event or the subscription does not exist,
	// and ErrExists when deliveryID is taken.
	ReplayEvent(ctx context.Context, eventID, subscriptionID, deliveryID string, now time.Time) (*Delivery, error)
	// Prune deletes up to max finished deliveries (and their attempts) that finished before
	// cutoff, and up to max events received before cutoff that have no delivery left, in one
	// short transaction. It returns how many deliveries it deleted, and more when either limit
	// was reached: callers repeat while more is true.
	Prune(ctx context.Context, cutoff time.Time, max int) (deleted int, more bool, err error)

	// SubscriptionGeneration grows with every committed change to a subscription made through
	// this Store that matters to delivery (its declaration, version, policy, activity or error
	// state), so that a cache of subscriptions knows when to read them again.
	SubscriptionGeneration() uint64

	// Stats returns counts for monitoring: the queue and the subscriptions' states.
	Stats(ctx context.Context, now time.Time) (Stats, error)

	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
	// Writable reports whether writes work: nil, or the failure (a full disk, an I/O error, a
	// read-only file) that made a write fail, until a write succeeds again. It is cheap while
	// writes work; after a failure it may make a small write of its own to find out.
	Writable(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// Notifier is implemented by a Store that several processes share: Due delivers a value
// whenever another process may have made deliveries due (an ingest, a retry, a reactivation).
type Notifier interface{ Due() <-chan struct{} }

// SameDeclaration reports whether a and b declare the same target: URL, Events, Headers,
// Plugins and Policy. A file sync updates a subscription only when they differ.
func SameDeclaration(a, b *Subscription) bool {
	return a.URL == b.URL && a.Policy == b.Policy &&
		slices.Equal(a.Events, b.Events) &&
		maps.Equal(a.Headers, b.Headers) &&
		slices.EqualFunc(a.Plugins, b.Plugins, func(x, y Plugin) bool {
			return x == y
		})
}

// CopyDeclaration sets dst's URL, Events, Headers and Plugins to src's, leaving its state.
func CopyDeclaration(dst, src *Subscription) {
	dst.URL = src.URL
	dst.Events = slices.Clone(src.Events)
	dst.Headers = maps.Clone(src.Headers)
	dst.Plugins = slices.Clone(src.Plugins)
	dst.Policy = src.Policy
}

// SameDelivery reports whether a and b send deliveries the same way: the same declaration and
// the same credentials. Backends bump Version when it is false.
func SameDelivery(a, b *Subscription) bool {
	return SameDeclaration(a, b) && a.Username == b.Username && a.Password == b.Password
}
