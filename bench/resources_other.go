//go:build !linux

package bench

import "time"

// resetPeakRSS does nothing here: the peak RSS is read on Linux only.
func resetPeakRSS() {}

// peakRSS returns 0, unknown: it is read from /proc on Linux only.
func peakRSS() int64 { return 0 }

// cpuTime returns 0, unknown: it is read with getrusage on Linux only.
func cpuTime() time.Duration { return 0 }
