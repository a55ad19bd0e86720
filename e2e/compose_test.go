package e2e

import (
	"bytes"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"

	"github.com/tollgate-dev/tollgate/cmd/tollgate/mainlib"
	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/envoy"
)

// loadCompose loads docker-compose.yml with the Compose specification's own Go loader
// (interpolation, anchors, validation against the schema, consistency of references).
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"}, cli.WithWorkingDirectory(".."), cli.WithEnv([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := cli.ProjectFromOptions(t.Context(), opts)
	if err != nil {
		t.Fatalf("docker-compose.yml: %v", err)
	}
	return p
}

// TestComposeFile checks that docker-compose.yml has the production shape (DESIGN §1), and
// that what it references exists: files, programs, subcommands, the services Envoy's clusters
// name, the ports they listen on, and a configuration tollgate accepts. No Docker engine is
// involved: nothing here claims the stack was run.
func TestComposeFile(t *testing.T) {
	p := loadCompose(t)
	want := []string{"anvil", "cockroach", "demo-upstream", "envoy", "migrate", "redis", "tollgate-serve-1", "tollgate-serve-2", "tollgate-settle"}
	got := p.ServiceNames()
	slices.Sort(got)
	if !slices.Equal(got, want) {
		t.Fatalf("services %v, want %v", got, want)
	}

	t.Run("envoy runs the real image with envoy/envoy.yaml", func(t *testing.T) {
		s := p.Services["envoy"]
		if !strings.HasPrefix(s.Image, "envoyproxy/envoy:") {
			t.Errorf("image %q", s.Image)
		}
		abs, _ := filepath.Abs("../envoy/envoy.yaml")
		var mounted bool
		for _, v := range s.Volumes {
			if v.Source == abs && v.Target == "/etc/envoy/envoy.yaml" {
				mounted = true
			}
		}
		if !mounted || !slices.Contains(s.Command, "/etc/envoy/envoy.yaml") {
			t.Errorf("envoy must mount %s at /etc/envoy/envoy.yaml and run it; volumes %+v command %v", abs, s.Volumes, s.Command)
		}
		b, err := envoy.Load("../envoy/envoy.yaml")
		if err != nil {
			t.Fatal(err)
		}
		port := b.GetStaticResources().GetListeners()[0].GetAddress().GetSocketAddress().GetPortValue()
		var published bool
		for _, pc := range s.Ports {
			published = published || (pc.Target == port && pc.Published == strconv.Itoa(int(port)))
		}
		if !published {
			t.Errorf("the listener port %d is not published: %+v", port, s.Ports)
		}
		// Every in-compose endpoint of every cluster is a service listening on that port.
		for _, c := range b.GetStaticResources().GetClusters() {
			for _, le := range c.GetLoadAssignment().GetEndpoints() {
				for _, lb := range le.GetLbEndpoints() {
					sa := lb.GetEndpoint().GetAddress().GetSocketAddress()
					host, port := sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))
					if strings.Contains(host, ".") {
						continue // outside the compose network (openrouter.ai)
					}
					svc, ok := p.Services[host]
					if !ok {
						t.Errorf("cluster %s names %s, which is not a service", c.GetName(), host)
						continue
					}
					if !slices.Contains(svc.Expose, port) {
						t.Errorf("cluster %s: service %s does not expose %s (expose %v)", c.GetName(), host, port, svc.Expose)
					}
					if !listensOn(svc, port) {
						t.Errorf("cluster %s: service %s is not configured to listen on %s", c.GetName(), host, port)
					}
				}
			}
		}
	})

	t.Run("programs and subcommands exist", func(t *testing.T) {
		dockerfile, err := os.ReadFile("../Dockerfile")
		if err != nil {
			t.Fatal(err)
		}
		var help bytes.Buffer
		if err := mainlib.Main(t.Context(), []string{"help"}, &help, &help); err != nil {
			t.Fatal(err)
		}
		for name, s := range p.Services {
			if s.Build == nil {
				continue
			}
			if _, err := os.Stat(filepath.Join(s.Build.Context, "Dockerfile")); err != nil {
				t.Errorf("%s: build context has no Dockerfile: %v", name, err)
			}
			if len(s.Command) == 0 {
				t.Errorf("%s: no command", name)
				continue
			}
			prog := s.Command[0]
			if !bytes.Contains(dockerfile, []byte("-o /out/"+prog+" ")) {
				t.Errorf("%s runs %s, which the Dockerfile does not build", name, prog)
			}
			if prog == "tollgate" && !strings.Contains(help.String(), "  "+s.Command[1]+" ") {
				t.Errorf("%s runs tollgate %s, which is not a subcommand:\n%s", name, s.Command[1], help.String())
			}
		}
		for _, pkg := range []string{"../cmd/tollgate", "../e2e/cmd/fakeupstream", "../e2e/cmd/envoyemu"} {
			if !bytes.Contains(dockerfile, []byte(strings.TrimPrefix(pkg, ".."))) {
				t.Errorf("the Dockerfile does not build %s", pkg)
			}
		}
	})

	t.Run("tollgate accepts its configuration", func(t *testing.T) {
		content := p.Configs["tollgate"].Content
		if content == "" {
			t.Fatal("configs.tollgate has no content")
		}
		path := filepath.Join(t.TempDir(), "tollgate.yaml")
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		for name, s := range p.Services {
			if s.Build == nil || len(s.Command) < 2 || s.Command[0] != "tollgate" {
				continue
			}
			var env []string
			for k, v := range s.Environment {
				if v != nil && k != "TOLLGATE_CONFIG" {
					env = append(env, k+"="+*v)
				}
			}
			if s.Environment["TOLLGATE_CONFIG"] == nil || *s.Environment["TOLLGATE_CONFIG"] != "/etc/tollgate/tollgate.yaml" {
				t.Errorf("%s: TOLLGATE_CONFIG must point at the mounted config", name)
			}
			if _, err := config.Load(path, env); err != nil {
				t.Errorf("%s: tollgate rejects its configuration:\n%v", name, err)
			}
		}
	})
}

// listensOn reports whether a service's command or environment puts a listener on port.
func listensOn(s types.ServiceConfig, port string) bool {
	for _, arg := range s.Command {
		if strings.HasSuffix(arg, ":"+port) {
			return true
		}
	}
	for k, v := range s.Environment {
		if strings.HasSuffix(k, "_ADDR") && v != nil && strings.HasSuffix(*v, ":"+port) {
			return true
		}
	}
	return false
}
