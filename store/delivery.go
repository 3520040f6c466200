package store

import (
	"time"
)

// Event is a producer's event as stored: its exact bytes and what the gateway read from them.
type Event struct {
	ID   string
	Type string
	// Payload is the exact body delivered: the producer's bytes, with id and created added
	// when the producer left them out.
	Payload []byte
	// TraceParent is the producer's W3C traceparent, so that deliveries join its trace.
	TraceParent string
	// Deliveries is how many deliveries the event fanned out to when it was stored.
	Deliveries int
	ReceivedAt time.Time
}

// IngestResult says what storing one event did.
type IngestResult struct {
	ID         string
	Type       string
	Deliveries int
	// Duplicate means an event with this id was already stored; nothing was stored or
	// scheduled again, and Type and Deliveries are the first event's.
	Duplicate bool
	// Targets are the subscriptions the event fanned out to (none for a duplicate).
	Targets []string
	// Claims are its deliveries leased at birth (IngestOptions.Lease), in Targets' order.
	Claims []*Claim
}

// IngestOptions say how IngestEvents makes deliveries.
type IngestOptions struct {
	// NewID makes delivery ids.
	NewID func() string
	// Lease, when not nil, is asked inside the transaction about each delivery made, by its
	// subscription: a delivery it answers true for is stored leased until LeaseUntil, with a
	// token, and comes back as a claim, to be attempted at once by the caller with no claim
	// of its own; the committed row stays the durable record. When IngestEvents fails nothing
	// is leased, and the caller undoes whatever its answers reserved. A backend may lease
	// nothing and never ask.
	Lease      func(subscriptionID string) bool
	LeaseUntil time.Time
}

// DeliveryStatus is where a delivery stands.
type DeliveryStatus string

const (
	// Pending deliveries have an attempt to come, at NextAttemptAt.
	Pending DeliveryStatus = "pending"
	// Succeeded deliveries got a 2xx.
	Succeeded DeliveryStatus = "succeeded"
	// Failed deliveries ran out of retries (or their subscription went away); the API can
	// retry them.
	Failed DeliveryStatus = "failed"
)

// Delivery is one event on its way to one subscription. Its ID is the webhook-id header.
type Delivery struct {
	ID             string
	EventID        string
	EventType      string
	SubscriptionID string
	Status         DeliveryStatus
	// Attempts counts HTTP attempts, quick retries included.
	Attempts int
	// Step counts the durable retries used, an index into delivery.schedule.
	Step           int
	NextAttemptAt  *time.Time
	LastStatusCode int
	LastError      string
	CreatedAt      time.Time
	UpdatedAt      time.Time
	FinishedAt     *time.Time
}

// Attempt is one HTTP attempt of a delivery.
type Attempt struct {
	At       time.Time
	Duration time.Duration
	// StatusCode is the response's status, or 0 when there was none (Error says why).
	StatusCode int
	Error      string
	// ResponseBody is the first 1 KiB of the response body.
	ResponseBody []byte
	TraceID      string
}

// Claim is a due delivery leased to one engine, with what it needs to make the attempt.
type Claim struct {
	Delivery *Delivery
	Event    *Event
	// Token fences the lease: completing or releasing the delivery applies only while it is
	// still the delivery's token.
	Token int64
}

// Lease names a claimed delivery and the token it was claimed with.
type Lease struct {
	DeliveryID string
	Token      int64
}

// ClaimOptions say which due deliveries to lease.
type ClaimOptions struct {
	// Now is the time deliveries must be due by.
	Now time.Time
	// LeaseUntil is when the leases end; an unfinished delivery is claimable again after it
	// unless its lease is extended.
	LeaseUntil time.Time
	// Subscriptions say whose deliveries to claim, and how many of each.
	Subscriptions []SubscriptionClaim
}

// SubscriptionClaim asks for up to Limit due deliveries of one subscription.
type SubscriptionClaim struct {
	ID    string
	Limit int
	// FIFO claims only the subscription's oldest pending delivery, when it is due.
	FIFO bool
}

// ClaimResult is what ClaimDeliveries leased.
type ClaimResult struct {
	Claims []*Claim
	// NextDue holds, for each subscription whose claim came short of its limit and that has
	// unleased pending deliveries left, when the earliest of them is due.
	NextDue map[string]time.Time
}

// Outcome is what a round of attempts at a delivery came to.
type Outcome struct {
	DeliveryID     string
	SubscriptionID string
	// Token is the claim's: the outcome applies only while it is still the delivery's.
	Token     int64
	Attempts  []Attempt
	Succeeded bool
	// NextAttemptAt, when not nil on a failure, schedules a durable retry; nil fails the
	// delivery for good.
	NextAttemptAt *time.Time
	// Gone means the target answered 410: the subscription is deactivated at once.
	Gone bool
	// SubscriptionDeleted means the round did not run because the subscription is gone: the
	// delivery fails for good.
	SubscriptionDeleted bool
	// Interrupted means a shutdown cut the round short. Its attempts are recorded (they
	// happened), but they are not the target's failure: the delivery is due again at
	// NextAttemptAt without using a step of the schedule, and the subscription's state is left
	// as it is.
	Interrupted bool
	// Reason is the error state reason a failure gives, such as "HTTP 500 from target".
	Reason string
}

// Stats are counts for monitoring.
type Stats struct {
	// Pending counts the deliveries of active subscriptions waiting for an attempt (due or
	// not) or in one; those of inactive subscriptions wait for a reactivation, not the queue.
	Pending int
	// OldestDue is when the longest-due of them that is not in flight became due; zero when
	// none is due.
	OldestDue time.Time
	// Subscriptions count active ones without error state, ones in error state, and inactive.
	Active, InErrorState, Inactive int
}

// ErrorPolicy is delivery.error_state_after and delivery.disable_after.
type ErrorPolicy struct {
	ErrorStateAfter int
	DisableAfter    time.Duration
}

// ApplyOutcome updates sub's state for an outcome at now, as every backend must: a success
// clears the error state; each failed attempt counts, and ErrorStateAfter consecutive ones put
// the subscription in error state; still failing DisableAfter later, or on a 410, it is
// deactivated. It reports whether sub changed.
func ApplyOutcome(sub *Subscription, o *Outcome, policy ErrorPolicy, now time.Time) bool {
	before := *sub
	if o.Succeeded {
		sub.ConsecutiveFailures = 0
		sub.InErrorState, sub.ErrorStateReason, sub.DetectedErrorStateAt = false, "", nil
		return before.ConsecutiveFailures != 0 || before.InErrorState
	}
	for _, a := range o.Attempts {
		if a.StatusCode < 200 || a.StatusCode > 299 {
			sub.ConsecutiveFailures++
		}
	}
	switch {
	case !sub.InErrorState && sub.ConsecutiveFailures >= policy.ErrorStateAfter:
		at := now
		sub.InErrorState, sub.ErrorStateReason, sub.DetectedErrorStateAt = true, o.Reason, &at
	case sub.InErrorState && o.Reason != "":
		sub.ErrorStateReason = o.Reason
	}
	stillFailing := sub.InErrorState && sub.DetectedErrorStateAt != nil && now.Sub(*sub.DetectedErrorStateAt) >= policy.DisableAfter
	if sub.Active && (o.Gone || stillFailing) {
		at := now
		sub.Active, sub.DeactivatedAt = false, &at
	}
	return sub.ConsecutiveFailures != before.ConsecutiveFailures || sub.InErrorState != before.InErrorState ||
		sub.ErrorStateReason != before.ErrorStateReason || sub.Active != before.Active
}

// Reactivate makes sub active again with a clean slate: no error state, no failures counted.
func Reactivate(sub *Subscription) {
	sub.Active, sub.DeactivatedAt = true, nil
	sub.InErrorState, sub.ErrorStateReason, sub.DetectedErrorStateAt = false, "", nil
	sub.ConsecutiveFailures = 0
}
