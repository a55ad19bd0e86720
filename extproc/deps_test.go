package extproc

import (
	"os/exec"
	"strings"
	"testing"
)

// TestRequestPathHasNoChainCode guards the request path's boundary: nothing that extproc or
// its subpackages import, directly or not, may come from go-ethereum or from settlement/.
// The request path must stay small, fast to build, and unable to touch the chain.
func TestRequestPathHasNoChainCode(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is needed to list dependencies: %v", err)
	}
	out, err := exec.Command(goBin, "list", "-deps", "./...").CombinedOutput()
	if err != nil {
		t.Fatalf("go list -deps ./...: %v\n%s", err, out)
	}
	deps := strings.Fields(string(out))
	if len(deps) < 50 {
		t.Fatalf("go list found only %d packages: %s", len(deps), out)
	}
	banned := []string{"github.com/ethereum/go-ethereum", "github.com/tollgate-dev/tollgate/settlement"}
	var seen []string
	for _, d := range deps {
		for _, b := range banned {
			if d == b || strings.HasPrefix(d, b+"/") {
				seen = append(seen, d)
			}
		}
	}
	if len(seen) > 0 {
		t.Errorf("extproc depends on chain code: %s", strings.Join(seen, ", "))
	}
	// The check would see them: the ledger and gRPC are on the list.
	for _, want := range []string{"github.com/tollgate-dev/tollgate/ledger", "google.golang.org/grpc"} {
		if !strings.Contains(string(out), want+"\n") {
			t.Errorf("%s missing from go list -deps: the check is not looking at the right thing", want)
		}
	}
}
