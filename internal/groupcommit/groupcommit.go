// Package groupcommit lets many goroutines share one store transaction: each hands an item to
// a Batcher and waits, and one goroutine flushes whatever has gathered in a single call.
package groupcommit

import (
	"context"
	"errors"
	"time"
)

// ErrStopped is returned by Do once the Batcher has stopped: the item was not flushed.
var ErrStopped = errors.New("groupcommit: stopped")

// Options tune a Batcher.
type Options[T any] struct {
	// Max bounds one flush, in units of Size.
	Max int
	// Size counts an item towards Max (an ingest request holds many events); nil counts 1.
	Size func(T) int
	// Timeout bounds one flush call (default 30s).
	Timeout time.Duration
	// Retries is how many times a failed flush is tried again (default 2; negative: never),
	// after a short wait, before its items are told the error.
	Retries int
}

// Batcher is a group commit: callers hand it items one at a time from many goroutines, and
// Run passes whatever has gathered (up to Max) to flush in one call.
type Batcher[T, R any] struct {
	in      chan item[T, R]
	stopped chan struct{}
	opts    Options[T]
	flush   func(ctx context.Context, items []T) ([]R, error)
}

type item[T, R any] struct {
	v    T
	done chan result[R]
}

type result[R any] struct {
	r   R
	err error
}

// New returns a Batcher that flushes with flush, which returns one result per item.
func New[T, R any](opts Options[T], flush func(ctx context.Context, items []T) ([]R, error)) *Batcher[T, R] {
	if opts.Max <= 0 {
		opts.Max = 256
	}
	if opts.Timeout <= 0 {
		opts.Timeout = 30 * time.Second
	}
	if opts.Retries == 0 {
		opts.Retries = 2
	}
	return &Batcher[T, R]{in: make(chan item[T, R], opts.Max), stopped: make(chan struct{}), opts: opts, flush: flush}
}

// Do hands v to the next flush and waits for its result. Once v is handed over, its result
// is reported whatever ctx does: a caller is never told "failed" about an item that was
// committed. It returns ErrStopped, without flushing v, when Run has returned.
func (b *Batcher[T, R]) Do(ctx context.Context, v T) (R, error) {
	var zero R
	it := item[T, R]{v: v, done: make(chan result[R], 1)}
	select {
	case b.in <- it:
	case <-b.stopped:
		return zero, ErrStopped
	case <-ctx.Done():
		return zero, ctx.Err()
	}
	select {
	case res := <-it.done:
		return res.r, res.err
	case <-b.stopped:
		// Run wrote the result of every item it flushed before it stopped; an item handed
		// over after its last flush was not flushed.
		select {
		case res := <-it.done:
			return res.r, res.err
		default:
			return zero, ErrStopped
		}
	}
}

// Run flushes batches until ctx ends, then flushes what was handed over before returning.
func (b *Batcher[T, R]) Run(ctx context.Context) {
	defer close(b.stopped)
	batch := make([]item[T, R], 0, b.opts.Max)
	for {
		batch = batch[:0]
		select {
		case <-ctx.Done():
			// Items handed over since the last flush are flushed, so that no Do waits in vain.
			for {
				select {
				case it := <-b.in:
					batch = append(batch, it)
				default:
					if len(batch) > 0 {
						b.flushBatch(ctx, batch)
					}
					return
				}
			}
		case it := <-b.in:
			batch = append(batch, it)
		}
		n := b.count(batch[0].v)
	gather:
		for n < b.opts.Max {
			select {
			case it := <-b.in:
				batch = append(batch, it)
				n += b.count(it.v)
			default:
				break gather
			}
		}
		b.flushBatch(ctx, batch)
	}
}

// flushBatch flushes one batch, with a timeout per try and a bounded number of retries, and
// tells every item its result.
func (b *Batcher[T, R]) flushBatch(ctx context.Context, batch []item[T, R]) {
	items := make([]T, len(batch))
	for i, it := range batch {
		items[i] = it.v
	}
	ctx = context.WithoutCancel(ctx)
	var (
		results []R
		err     error
	)
	for try := 0; ; try++ {
		tryCtx, cancel := context.WithTimeout(ctx, b.opts.Timeout)
		results, err = b.flush(tryCtx, items)
		cancel()
		if err == nil || try >= b.opts.Retries {
			break
		}
		time.Sleep(time.Duration(try+1) * 50 * time.Millisecond)
	}
	for i, it := range batch {
		if err != nil {
			it.done <- result[R]{err: err}
		} else {
			it.done <- result[R]{r: results[i]}
		}
	}
}

func (b *Batcher[T, R]) count(v T) int {
	if b.opts.Size == nil {
		return 1
	}
	return b.opts.Size(v)
}
