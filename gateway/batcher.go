package gateway

import (
	"context"
	"errors"
)

// errStopped is returned to callers of a batcher that has stopped.
var errStopped = errors.New("gateway: shutting down")

// batcher is a group commit: callers hand it items one at a time from many goroutines, and one
// goroutine passes whatever has gathered (up to max) to flush in one call, so that concurrent
// requests share a transaction instead of queueing for one each.
type batcher[T, R any] struct {
	in      chan batchItem[T, R]
	stopped chan struct{}
	max     int
	flush   func(ctx context.Context, items []T) ([]R, error)
	// size counts an item towards max (an ingest request holds many events); nil counts 1.
	size func(T) int
}

type batchItem[T, R any] struct {
	item T
	done chan batchResult[R]
}

type batchResult[R any] struct {
	r   R
	err error
}

func newBatcher[T, R any](max int, size func(T) int, flush func(context.Context, []T) ([]R, error)) *batcher[T, R] {
	return &batcher[T, R]{in: make(chan batchItem[T, R], max), stopped: make(chan struct{}), max: max, flush: flush, size: size}
}

// Do hands item to the batch and waits until it is flushed.
func (b *batcher[T, R]) Do(ctx context.Context, item T) (R, error) {
	var zero R
	it := batchItem[T, R]{item: item, done: make(chan batchResult[R], 1)}
	select {
	case b.in <- it:
	case <-b.stopped:
		return zero, errStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	// Once handed over, the item is flushed whatever the caller's context does: its result
	// must be known, or a producer could be told "failed" about a stored event.
	select {
	case res := <-it.done:
		return res.r, res.err
	case <-b.stopped:
		return zero, errStopped
	}
}

// run flushes batches until ctx ends. Callers must have stopped calling Do by then.
func (b *batcher[T, R]) run(ctx context.Context) {
	defer close(b.stopped)
	batch := make([]batchItem[T, R], 0, b.max)
	items := make([]T, 0, b.max)
	for {
		batch, items = batch[:0], items[:0]
		select {
		case <-ctx.Done():
			return
		case it := <-b.in:
			batch = append(batch, it)
		}
		n := b.count(batch[0].item)
	gather:
		for n < b.max {
			select {
			case it := <-b.in:
				batch = append(batch, it)
				n += b.count(it.item)
			default:
				break gather
			}
		}
		for _, it := range batch {
			items = append(items, it.item)
		}
		results, err := b.flush(context.WithoutCancel(ctx), items)
		for i, it := range batch {
			if err != nil {
				it.done <- batchResult[R]{err: err}
			} else {
				it.done <- batchResult[R]{r: results[i]}
			}
		}
	}
}

func (b *batcher[T, R]) count(item T) int {
	if b.size == nil {
		return 1
	}
	return b.size(item)
}
