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

// AllEvents, as a subscription's only event type, means it receives every type.
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

	CreatedAt time.Time
	UpdatedAt time.Time
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
	// deliveries. It returns ErrNotFound, or ErrOwnedByFile for a declared one (left as it is).
	DeleteSubscription(ctx context.Context, id string) error
	// SyncFileSubscriptions makes the file-owned subscriptions match subs, in one transaction:
	// each is created, or updated in URL, Events, Headers and Plugins (its state is kept);
	// file-owned ones not in subs are deleted. API-owned subscriptions are never touched: an
	// id in subs that one has fails the whole sync with ErrOwnedByAPI.
	SyncFileSubscriptions(ctx context.Context, subs []*Subscription, now time.Time) (SyncResult, error)

	// IngestEvents stores events in one transaction and, for each one whose id is new, a
	// pending delivery due at once (at its ReceivedAt) for every active subscription whose
	// events match its type. newID makes delivery ids. An id seen before, in the store or
	// earlier in events, is a duplicate: nothing is stored for it. Results follow events.
	IngestEvents(ctx context.Context, events []*Event, newID func() string) ([]IngestResult, error)
	// ClaimDeliveries leases due pending deliveries of active subscriptions, the longest due
	// first, and returns them with their events and subscriptions.
	ClaimDeliveries(ctx context.Context, opts ClaimOptions) ([]*Claim, error)
	// CompleteDeliveries records outcomes in one transaction: their attempts, each delivery's
	// new status (which ends its lease), and each subscription's state through ApplyOutcome.
	// A delivery that is no longer pending (its subscription was deleted meanwhile) keeps its
	// status; its attempts are still recorded.
	CompleteDeliveries(ctx context.Context, outcomes []*Outcome, policy ErrorPolicy, now time.Time) error
	// ReleaseDeliveries ends the leases of claimed deliveries that were not attempted, so they
	// can be claimed again at once.
	ReleaseDeliveries(ctx context.Context, ids []string) error
	// RecoverLeases, at start, releases the leases of processes that no longer run. A backend
	// that one process owns (SQLite) releases them all; a shared one lets them expire.
	RecoverLeases(ctx context.Context) error
	// NextDue returns when the earliest pending delivery that is not leased is due; false when
	// there is none.
	NextDue(ctx context.Context) (time.Time, bool, error)
	// GetEvent returns an event and its deliveries, or ErrNotFound.
	GetEvent(ctx context.Context, id string) (*Event, []*Delivery, error)
	// GetDelivery returns a delivery and its attempts, oldest first, or ErrNotFound.
	GetDelivery(ctx context.Context, id string) (*Delivery, []Attempt, error)
	// ListDeliveries returns a subscription's deliveries, newest first, with status if it is
	// not empty. opts.After names the last delivery of the previous page.
	ListDeliveries(ctx context.Context, subscriptionID string, status DeliveryStatus, opts ListOptions) ([]*Delivery, error)
	// RetryDelivery makes a delivery pending and due at now, whatever its status.
	RetryDelivery(ctx context.Context, id string, now time.Time) (*Delivery, error)
	// Prune deletes finished deliveries (and their attempts) that finished before cutoff,
	// then events received before cutoff that have no delivery left. It returns how many
	// deliveries it deleted.
	Prune(ctx context.Context, cutoff time.Time) (int, error)

	// Stats returns counts for monitoring: the queue and the subscriptions' states.
	Stats(ctx context.Context, now time.Time) (Stats, error)

	// Ping reports whether the store can be reached.
	Ping(ctx context.Context) error
	// Close releases the store's resources.
	Close() error
}

// SameDeclaration reports whether a and b declare the same target: URL, Events, Headers and
// Plugins. A file sync updates a subscription only when they differ.
func SameDeclaration(a, b *Subscription) bool {
	return a.URL == b.URL &&
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
}
