package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMakeRunWalkthrough does what docs/e2e.md tells a newcomer to do: it runs scripts/run.sh
// (what `make run` runs after `make tools`) with port 10000 busy, sources the env.sh it
// prints, runs the walk-through block of docs/e2e.md exactly as written there (the shell
// between the walkthrough:begin/end markers), checks what it printed — authorize message,
// sign-in, top-up message, top-up credited, a charge of exactly 40 µUSDC listed in the history,
// a payout settled, the USDC on chain, a response charged 8 µUSDC — and then presses Ctrl-C
// (SIGINT) and checks that everything stopped and the temporary directory is gone. It runs as
// whatever user runs the tests (root here: PostgreSQL then runs as the postgres user).
func TestMakeRunWalkthrough(t *testing.T) {
	block := walkthroughBlock(t)
	// Port 10000 busy, as on a machine that runs something there (or another make run).
	if l, err := net.Listen("tcp", "127.0.0.1:10000"); err == nil {
		t.Cleanup(func() { _ = l.Close() })
	}

	run := exec.Command("bash", "scripts/run.sh") // stopped by SIGINT below, as Ctrl-C would
	run.Dir = ".."
	run.Env = cleanEnv()
	run.SysProcAttr = &syscall.SysProcAttr{Setpgid: true} // a last-resort kill reaches its children
	out := &lockedLines{}
	run.Stdout, run.Stderr = out, out
	if err := run.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- run.Wait() }()
	stopped := false
	t.Cleanup(func() {
		if stopped {
			return
		}
		_ = run.Process.Signal(os.Interrupt)
		select {
		case err := <-exited:
			t.Logf("make run ended: %v", err)
		case <-time.After(60 * time.Second):
			_ = syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
		}
		t.Logf("make run's output:\n%s", tail(out.String(), 60))
	})

	envLine := out.waitFor(t, exited, regexp.MustCompile(`walk-through variables\s+\. (\S+/env\.sh)`), 10*time.Minute)
	envFile := regexp.MustCompile(`\. (\S+/env\.sh)`).FindStringSubmatch(envLine)[1]
	runDir := strings.TrimSuffix(envFile, "/env.sh")
	front := out.waitFor(t, exited, regexp.MustCompile(`front \(Envoy emulator\)\s+http://127\.0\.0\.1:\d+`), time.Second)
	if strings.Contains(front, ":10000 ") {
		t.Errorf("the front proxy took port 10000, which this test holds: %q", front)
	}
	if !strings.Contains(out.String(), "port 10000 is busy") {
		t.Errorf("make run did not say that port 10000 is busy")
	}

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	walk := exec.CommandContext(ctx, "bash", "-c", "set -euo pipefail\n. "+envFile+"\n"+block)
	walk.Dir = t.TempDir()
	walk.Env = cleanEnv()
	printed, err := walk.CombinedOutput()
	t.Logf("the walk-through printed:\n%s", printed)
	if err != nil {
		t.Fatalf("the walk-through of docs/e2e.md failed: %v", err)
	}
	for _, want := range []string{
		"connect a wallet first", "/connect?t=",
		`"authorized":true`,
		"too low for this request", "/topup?t=",
		`{"status":"signed","amount":"5.00"}`, "top-up credited",
		"w1 w2 w3",
		`{"available":"4.99996","available_micro":4999960,"held_micro":0}`,
		`{"kind":"capture","amount":"-0.00004","amount_micro":-40}`,
		`{"kind":"deposit","amount":"5.00","amount_micro":5000000}`,
		`{"success":true,"amount":"2.00"`,
		`{"success":true,"amount":"0.50","reason":"charged twice"}`,
		`{"available":"1.900038","in_flight":"0.00","paid_out":"0.00"}`,
		`{"status":"requested","amount":"1.00","to":"0x90f79bf6eb2c4f870365e785982e1f101e93b906"}`,
		"payout settled",
		`{"available":"0.900038","in_flight":"0.00","paid_out":"1.00"}`,
		"0x70997970C51812dc3A010C7d01b50e0d17dc79C8 5.000000 USDC",
		"0x90F79bf6EB2c4f870365E785982E1f101E93b906 1.000000 USDC",
		"0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC 95.000000 USDC",
		`{"status":"incomplete","text":"w1 w2 w3 ","input_tokens":1,"output_tokens":3}`,
		`{"kind":"capture","amount":"-0.000008","amount_micro":-8}`,
		`{"text":"w1 w2 w3 w4 ","prompt_tokens":4,"completion_tokens":4}`,
		`{"kind":"capture","amount_micro":-14,"api":"completions"}`,
	} {
		if !bytes.Contains(printed, []byte(want)) {
			t.Errorf("the walk-through did not print %s", want)
		}
	}

	// Ctrl-C: everything stops, the temporary directory goes.
	procs := childProcs(run.Process.Pid)
	if pm, err := os.ReadFile(runDir + "/pg/postmaster.pid"); err == nil { // PostgreSQL daemonizes: not a child
		var pg int
		if first, _, _ := strings.Cut(string(pm), "\n"); scanInt(first, &pg) {
			if p, ok := readProc(pg); ok {
				procs = append(procs, p)
			}
		}
	} else {
		t.Errorf("no PostgreSQL pid file in %s: %v", runDir, err)
	}
	if len(procs) < 7 {
		t.Errorf("make run runs %d processes (%v); want PostgreSQL, Redis, anvil, settle, the demo upstream, serve and the emulator", len(procs), procs)
	}
	stopped = true
	if err := run.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		var exit *exec.ExitError
		if err != nil && !errors.As(err, &exit) {
			t.Errorf("make run: %v", err)
		}
	case <-time.After(60 * time.Second):
		_ = syscall.Kill(-run.Process.Pid, syscall.SIGKILL)
		t.Fatalf("make run did not stop within 60s of Ctrl-C:\n%s", tail(out.String(), 30))
	}
	if _, err := os.Stat(runDir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("make run left %s behind (%v)", runDir, err)
	}
	for _, p := range procs {
		// An orphan is reaped by init a moment after make run ends.
		eventually(t, fmt.Sprintf("process %d (%s), started by make run, gone after Ctrl-C", p.pid, p.cmd), 5*time.Second, func() bool {
			now, ok := readProc(p.pid)
			return !ok || now.start != p.start || now.state == "Z"
		})
	}
	if !strings.Contains(out.String(), "== stopping") {
		t.Errorf("make run did not say it was stopping:\n%s", tail(out.String(), 10))
	}
}

// walkthroughBlock returns the shell of docs/e2e.md between its walkthrough markers.
func walkthroughBlock(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile("../docs/e2e.md")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile("(?s)<!-- walkthrough:begin -->\n```bash\n(.*?)```\n<!-- walkthrough:end -->").FindSubmatch(doc)
	if m == nil {
		t.Fatal("docs/e2e.md has no ```bash block between <!-- walkthrough:begin --> and <!-- walkthrough:end -->")
	}
	return string(m[1])
}

// cleanEnv is this process's environment without the variables that would change what make
// run does (a fixed port, a kept directory, a tollgate configuration).
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "MAKE_RUN_PORT=") && !strings.HasPrefix(kv, "TOLLGATE_") {
			env = append(env, kv)
		}
	}
	return env
}

// proc is a process as /proc shows it; start (its start time) tells a reused pid apart.
type proc struct {
	pid               int
	ppid              int
	state, start, cmd string
}

func (p proc) String() string { return fmt.Sprintf("%d %s", p.pid, p.cmd) }

// readProc reads /proc/PID (Linux); ok is false if there is no such process.
func readProc(pid int) (proc, bool) {
	dir := "/proc/" + strconv.Itoa(pid)
	stat, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return proc{}, false
	}
	// pid (comm) state ppid … starttime (field 22); comm may hold spaces: split after the last ')'.
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	if len(fields) < 20 {
		return proc{}, false
	}
	p := proc{pid: pid, state: fields[0], start: fields[19]}
	if !scanInt(fields[1], &p.ppid) {
		return proc{}, false
	}
	cmd, _ := os.ReadFile(dir + "/cmdline")
	p.cmd = strings.TrimSpace(strings.ReplaceAll(string(cmd), "\x00", " "))
	return p, true
}

// childProcs lists the living processes whose parent is pid, but for sleep (run.sh's loop).
func childProcs(pid int) []proc {
	var out []proc
	entries, _ := os.ReadDir("/proc")
	for _, e := range entries {
		var n int
		if !scanInt(e.Name(), &n) {
			continue
		}
		if p, ok := readProc(n); ok && p.ppid == pid && p.state != "Z" && !strings.HasPrefix(p.cmd, "sleep ") {
			out = append(out, p)
		}
	}
	return out
}

func scanInt(s string, n *int) bool {
	v := 0
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
		v = v*10 + int(c-'0')
	}
	*n = v
	return s != ""
}

// lockedLines collects a process's output for concurrent reading.
type lockedLines struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lockedLines) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lockedLines) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitFor waits for a line matching re and returns it; it fails the test if the process
// exits first or the time runs out.
func (l *lockedLines) waitFor(t *testing.T, exited chan error, re *regexp.Regexp, timeout time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		sc := bufio.NewScanner(strings.NewReader(l.String()))
		for sc.Scan() {
			if re.MatchString(sc.Text()) {
				return sc.Text()
			}
		}
		select {
		case err := <-exited:
			exited <- err
			t.Fatalf("make run exited (%v) before printing %s:\n%s", err, re, tail(l.String(), 40))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("make run did not print %s within %s:\n%s", re, timeout, tail(l.String(), 40))
		}
	}
}
