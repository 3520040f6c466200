package store

import "time"

// DeliveryFilter selects deliveries to list. Its zero value selects every delivery.
type DeliveryFilter struct {
	// SubscriptionID, when not empty, selects one subscription's deliveries (a deleted
	// subscription's too: they are kept).
	SubscriptionID string
	// Status, when not empty, selects deliveries with that status.
	Status DeliveryStatus
	// EventType, when not empty, selects deliveries of events of that type.
	EventType string
	// Since and Until bound CreatedAt: Since <= CreatedAt < Until. A zero time does not bound.
	Since, Until time.Time
}
