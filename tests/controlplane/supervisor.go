package main

// A supervisor for Calico's own programs (calico-apiserver,
// calico-kube-controllers), run as child processes the way a kubelet runs a
// Pod's container: restarted when they exit (kube-controllers exits on
// purpose whenever its KubeControllersConfiguration changes; calico-apiserver
// when the extension-apiserver-authentication ConfigMap changes), with their
// output appended to DIR/<name>.log.
//
// No child outlives the control plane: each is started with
// Pdeathsig=SIGKILL from a goroutine locked to its OS thread for the child's
// whole life (the signal follows the thread that forked, not the process),
// and a clean shutdown stops them explicitly.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sync"
	"syscall"
	"time"
)

type supervised struct {
	name string
	bin  string
	args []string
	log  string

	mu      sync.Mutex
	env     []string // the environment of the next start
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd exits
	stopped bool          // no restarts until start() is called again
	starts  int
	wake    chan struct{}
}

func newSupervised(dir, name, bin string, args, env []string) *supervised {
	return &supervised{
		name: name, bin: bin, args: args, env: env,
		log:     filepath.Join(dir, name+".log"),
		stopped: true,
		wake:    make(chan struct{}, 1),
	}
}

// run restarts the program whenever it exits, until done is closed. Call it
// once, in its own goroutine.
func (s *supervised) run(done <-chan struct{}) {
	runtime.LockOSThread() // never unlocked: Pdeathsig is tied to this thread
	backoff := 100 * time.Millisecond
	for {
		select {
		case <-done:
			s.stop()
			return
		default:
		}
		s.mu.Lock()
		stopped := s.stopped
		s.mu.Unlock()
		if stopped {
			select {
			case <-done:
				return
			case <-s.wake:
			}
			continue
		}
		began := time.Now()
		exited, err := s.spawn()
		if err != nil {
			logf("%s: could not start: %v", s.name, err)
		} else {
			select {
			case <-exited:
			case <-done:
				s.stop()
				return
			}
		}
		// Stopped on purpose: wait for the next start(). A program that ran for
		// a while (kube-controllers exits to apply a new configuration)
		// restarts at once; a crash loop backs off.
		s.mu.Lock()
		stopped = s.stopped
		s.mu.Unlock()
		if stopped {
			continue
		}
		if time.Since(began) > time.Second {
			backoff = 100 * time.Millisecond
			continue
		}
		if backoff < 2*time.Second {
			backoff *= 2
		}
		select {
		case <-done:
			return
		case <-time.After(backoff):
		}
	}
}

func (s *supervised) spawn() (<-chan struct{}, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return nil, fmt.Errorf("stopped")
	}
	out, err := os.OpenFile(s.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(s.bin, s.args...)
	cmd.Env = append(os.Environ(), s.env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL, Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		return nil, err
	}
	s.starts++
	logf("%s: started (pid %d, start #%d)", s.name, cmd.Process.Pid, s.starts)
	exited := make(chan struct{})
	s.cmd, s.exited = cmd, exited
	go func() {
		err := cmd.Wait()
		out.Close()
		logf("%s: exited (%v)", s.name, err)
		close(exited)
	}()
	return exited, nil
}

// start lets the supervisor (re)start the program with env.
func (s *supervised) start(env []string) {
	s.mu.Lock()
	s.env, s.stopped = env, false
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// stop terminates the program (SIGTERM, SIGKILL after 5 s) and keeps it down
// until the next start().
func (s *supervised) stop() {
	s.mu.Lock()
	s.stopped = true
	cmd, exited := s.cmd, s.exited
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	select {
	case <-exited:
		return
	default:
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(5 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
}

// running reports whether the program is up right now.
func (s *supervised) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil || s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}
