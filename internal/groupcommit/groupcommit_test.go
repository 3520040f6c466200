package groupcommit

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

func TestDoReturnsEachItemsResult(t *testing.T) {
	var mu sync.Mutex
	var sizes []int
	b := New(Options[int]{Max: 8}, func(_ context.Context, items []int) ([]int, error) {
		mu.Lock()
		sizes = append(sizes, len(items))
		mu.Unlock()
		out := make([]int, len(items))
		for i, v := range items {
			out[i] = v * 10
		}
		return out, nil
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { b.Run(ctx); close(done) }()
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			r, err := b.Do(context.Background(), i)
			if err != nil || r != i*10 {
				t.Errorf("Do(%d) = %d, %v", i, r, err)
			}
		})
	}
	wg.Wait()
	cancel()
	<-done
	for _, n := range sizes {
		if n > 8 {
			t.Fatalf("a flush of %d items, more than Max", n)
		}
	}
}

func TestFailedFlushIsRetriedThenReported(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name     string
		failures int
		want     error
	}{
		{"recovers", 2, nil},
		{"gives up", 3, boom},
	} {
		t.Run(c.name, func(t *testing.T) {
			calls := 0
			b := New(Options[int]{Retries: 2}, func(_ context.Context, items []int) ([]int, error) {
				calls++
				if calls <= c.failures {
					return nil, boom
				}
				return items, nil
			})
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			go b.Run(ctx)
			if _, err := b.Do(context.Background(), 1); !errors.Is(err, c.want) {
				t.Fatalf("Do: %v, want %v", err, c.want)
			}
			if calls != min(c.failures+1, 3) {
				t.Fatalf("%d flush calls", calls)
			}
		})
	}
}

func TestFlushHasATimeout(t *testing.T) {
	b := New(Options[int]{Timeout: 20 * time.Millisecond, Retries: -1}, func(ctx context.Context, items []int) ([]int, error) {
		<-ctx.Done() // a store that hangs
		return nil, ctx.Err()
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go b.Run(ctx)
	if _, err := b.Do(context.Background(), 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Do: %v, want a deadline", err)
	}
}

// At shutdown, an item is either flushed and told its result, or not flushed and told
// ErrStopped: never "stopped" about an item that was committed.
func TestStopNeverMisreportsAFlushedItem(t *testing.T) {
	for range 20 {
		var mu sync.Mutex
		flushed := map[int]bool{}
		b := New(Options[int]{Max: 4}, func(_ context.Context, items []int) ([]int, error) {
			mu.Lock()
			for _, v := range items {
				flushed[v] = true
			}
			mu.Unlock()
			return items, nil
		})
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		done := make(chan struct{})
		go func() { b.Run(ctx); close(done) }()
		var wg sync.WaitGroup
		results := make([]error, 200)
		for i := range results {
			wg.Go(func() { _, results[i] = b.Do(context.Background(), i) })
			if i == 100 {
				cancel()
			}
		}
		wg.Wait()
		<-done
		for i, err := range results {
			switch {
			case err == nil && !flushed[i]:
				t.Fatalf("item %d reported flushed but was not", i)
			case errors.Is(err, ErrStopped) && flushed[i]:
				t.Fatalf("item %d was flushed but reported stopped", i)
			case err != nil && !errors.Is(err, ErrStopped):
				t.Fatalf("item %d: %v", i, err)
			}
		}
	}
}
