package bench

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
)

// profiles are the files of --cpuprofile and --memprofile, created before the run so that a bad
// path fails before anything starts. Either may be nil. The profiles are of the whole process:
// the load generator and the receivers as well as the in-process gateway.
type profiles struct {
	cpu, mem *os.File
}

// createProfiles creates the files o names.
func createProfiles(o *Options) (*profiles, error) {
	p := &profiles{}
	var err error
	if o.CPUProfile != "" {
		if p.cpu, err = os.Create(o.CPUProfile); err != nil {
			return nil, fmt.Errorf("--cpuprofile: %w", err)
		}
	}
	if o.MemProfile != "" {
		if p.mem, err = os.Create(o.MemProfile); err != nil {
			p.close()
			return nil, fmt.Errorf("--memprofile: %w", err)
		}
	}
	return p, nil
}

// start starts the CPU profile, if there is one.
func (p *profiles) start() error {
	if p == nil || p.cpu == nil {
		return nil
	}
	if err := pprof.StartCPUProfile(p.cpu); err != nil {
		return fmt.Errorf("--cpuprofile: %w", err)
	}
	return nil
}

// stop stops the CPU profile, writes the heap profile after a garbage collection (so that it
// shows what is live now), and closes the files.
func (p *profiles) stop() error {
	if p == nil {
		return nil
	}
	if p.cpu != nil {
		pprof.StopCPUProfile()
	}
	var err error
	if p.mem != nil {
		runtime.GC()
		if werr := pprof.Lookup("heap").WriteTo(p.mem, 0); werr != nil {
			err = fmt.Errorf("--memprofile: %w", werr)
		}
	}
	return errors.Join(err, p.close())
}

// close closes the files that are still open.
func (p *profiles) close() error {
	if p == nil {
		return nil
	}
	var errs []error
	for _, f := range []**os.File{&p.cpu, &p.mem} {
		if *f != nil {
			errs = append(errs, (*f).Close())
			*f = nil
		}
	}
	return errors.Join(errs...)
}
