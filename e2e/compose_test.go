package e2e

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/compose-spec/compose-go/v2/cli"
	"github.com/compose-spec/compose-go/v2/types"
	"github.com/ethereum/go-ethereum/ethclient"
	"go.yaml.in/yaml/v3"

	"github.com/tollgate-dev/tollgate/cmd/tollgate/mainlib"
	"github.com/tollgate-dev/tollgate/config"
	"github.com/tollgate-dev/tollgate/e2e/devchain"
	"github.com/tollgate-dev/tollgate/envoy"
	"github.com/tollgate-dev/tollgate/internal/testdb"
	"github.com/tollgate-dev/tollgate/settlement"
	"github.com/tollgate-dev/tollgate/settlement/chaintest"
)

// loadCompose loads docker-compose.yml with the Compose specification's own Go loader
// (interpolation, anchors, validation against the schema, consistency of references).
func loadCompose(t *testing.T) *types.Project {
	t.Helper()
	opts, err := cli.NewProjectOptions([]string{"../docker-compose.yml"}, cli.WithWorkingDirectory(".."), cli.WithEnv([]string{}))
	if err != nil {
		t.Fatal(err)
	}
	p, err := opts.LoadProject(t.Context())
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
	want := []string{"anvil", "chain-setup", "cockroach", "demo-upstream", "envoy", "migrate", "prometheus", "redis", "tollgate-serve-1", "tollgate-serve-2", "tollgate-settle"}
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
					if !listensOn(svc, "_ADDR", port) {
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
		for _, pkg := range []string{"../cmd/tollgate", "../e2e/cmd/fakeupstream", "../e2e/cmd/envoyemu", "../e2e/cmd/devchain"} {
			if !bytes.Contains(dockerfile, []byte(strings.TrimPrefix(pkg, ".."))) {
				t.Errorf("the Dockerfile does not build %s", pkg)
			}
		}
	})

	t.Run("the test token is deployed where settle looks, before settle starts", func(t *testing.T) {
		setup, anvil, settle := p.Services["chain-setup"], p.Services["anvil"], p.Services["tollgate-settle"]
		if len(setup.Command) == 0 || setup.Command[0] != "devchain" || setup.Restart != "no" {
			t.Errorf("chain-setup must be a one-shot devchain run (restart: \"no\"); command %v restart %q", setup.Command, setup.Restart)
		}
		if d := setup.DependsOn["anvil"]; d.Condition != types.ServiceConditionHealthy || anvil.HealthCheck == nil || len(anvil.HealthCheck.Test) < 2 {
			t.Errorf("chain-setup must wait for a healthy anvil (depends_on %+v, anvil healthcheck %+v)", setup.DependsOn, anvil.HealthCheck)
		}
		if d := settle.DependsOn["chain-setup"]; d.Condition != types.ServiceConditionCompletedSuccessfully {
			t.Errorf("tollgate-settle must start after chain-setup completed successfully: depends_on %+v", settle.DependsOn)
		}
		cfg := composeConfig(t, p, "tollgate-settle", nil)
		if len(cfg.Settle.Chains) != 1 {
			t.Fatalf("settle.chains: %+v", cfg.Settle.Chains)
		}
		chain := cfg.Settle.Chains[0]
		if chain.USDC != devchain.TokenAddress().Hex() {
			t.Errorf("settle.chains[0].usdc is %s; devchain deploys the token at %s", chain.USDC, devchain.TokenAddress().Hex())
		}
		if got := flagValue(setup.Command, "-rpc"); got != chain.RPCURL || !strings.Contains(got, "//anvil:"+flagValue(anvil.Entrypoint, "--port")) {
			t.Errorf("chain-setup's -rpc %q, settle's rpc_url %q and anvil's --port %q disagree", got, chain.RPCURL, flagValue(anvil.Entrypoint, "--port"))
		}
		if got := flagValue(anvil.Entrypoint, "--chain-id"); got != chain.ID {
			t.Errorf("anvil's --chain-id %q, settle's chain id %q", got, chain.ID)
		}
		if flagValue(anvil.Entrypoint, "--block-time") == "" || (chain.Finality != "confirmations" && flagValue(anvil.Entrypoint, "--slots-in-an-epoch") == "") {
			t.Errorf("anvil %v must mine on a timer and, for the finalized rule, finalize within a few blocks", anvil.Entrypoint)
		}
		hot, err := settlement.LoadLocalSigner(cfg.Settle.HotWallet.PrivateKey, cfg.Settle.HotWallet.PrivateKeyFile)
		if err != nil {
			t.Fatalf("tollgate-settle has no usable hot wallet key: %v", err)
		}
		var funded bool
		for i, a := range setup.Command {
			funded = funded || (a == "-mint" && i+1 < len(setup.Command) && strings.HasPrefix(setup.Command[i+1], hot.Address().Hex()+"="))
		}
		if !funded {
			t.Errorf("chain-setup mints no test USDC to the hot wallet %s, which pays payouts", hot.Address().Hex())
		}
	})

	t.Run("prometheus scrapes every serve and settle process under the rules' jobs", func(t *testing.T) {
		s := p.Services["prometheus"]
		if !strings.HasPrefix(s.Image, "prom/prometheus:") {
			t.Errorf("image %q", s.Image)
		}
		for _, f := range []string{"prometheus.yml", "tollgate-rules.yaml"} {
			abs, _ := filepath.Abs("../deploy/prometheus/" + f)
			if !slices.ContainsFunc(s.Volumes, func(v types.ServiceVolumeConfig) bool {
				return v.Source == abs && v.Target == "/etc/prometheus/"+f
			}) {
				t.Errorf("prometheus must mount %s at /etc/prometheus/%s; volumes %+v", abs, f, s.Volumes)
			}
		}
		raw, err := os.ReadFile("../deploy/prometheus/prometheus.yml")
		if err != nil {
			t.Fatal(err)
		}
		var cfg struct {
			RuleFiles     []string `yaml:"rule_files"`
			ScrapeConfigs []struct {
				JobName       string `yaml:"job_name"`
				StaticConfigs []struct {
					Targets []string `yaml:"targets"`
				} `yaml:"static_configs"`
			} `yaml:"scrape_configs"`
		}
		if err := yaml.Unmarshal(raw, &cfg); err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(cfg.RuleFiles, []string{"tollgate-rules.yaml"}) {
			t.Errorf("rule_files %v, want the mounted tollgate-rules.yaml", cfg.RuleFiles)
		}
		// Every target is a service's admin address, in the job of what that service runs, and
		// every serve and settle process is a target.
		jobOf := map[string]string{"serve": "tollgate-serve", "settle": "tollgate-settle"}
		scraped := map[string]bool{}
		for _, sc := range cfg.ScrapeConfigs {
			for _, st := range sc.StaticConfigs {
				for _, target := range st.Targets {
					host, port, _ := strings.Cut(target, ":")
					svc, ok := p.Services[host]
					switch {
					case !ok || len(svc.Command) < 2 || svc.Command[0] != "tollgate":
						t.Errorf("job %s scrapes %s, which is not a tollgate service", sc.JobName, target)
						continue
					case jobOf[svc.Command[1]] != sc.JobName:
						t.Errorf("job %s scrapes %s, which runs tollgate %s", sc.JobName, host, svc.Command[1])
					case !slices.Contains(svc.Expose, port) || !listensOn(svc, "_ADMIN_ADDR", port):
						t.Errorf("job %s scrapes %s, but its admin address is not on port %s (expose %v)", sc.JobName, target, port, svc.Expose)
					}
					scraped[host] = true
				}
			}
		}
		for name, svc := range p.Services {
			if len(svc.Command) >= 2 && svc.Command[0] == "tollgate" && jobOf[svc.Command[1]] != "" && !scraped[name] {
				t.Errorf("%s runs tollgate %s, and nothing scrapes it", name, svc.Command[1])
			}
		}
	})

	t.Run("tollgate accepts its configuration", func(t *testing.T) {
		if p.Configs["tollgate"].Content == "" {
			t.Fatal("configs.tollgate has no content")
		}
		for name, s := range p.Services {
			if s.Build == nil || len(s.Command) < 2 || s.Command[0] != "tollgate" {
				continue
			}
			if s.Environment["TOLLGATE_CONFIG"] == nil || *s.Environment["TOLLGATE_CONFIG"] != "/etc/tollgate/tollgate.yaml" {
				t.Errorf("%s: TOLLGATE_CONFIG must point at the mounted config", name)
			}
			composeConfig(t, p, name, nil)
		}
	})
}

// TestAnvilComposeChainSetup runs docker-compose.yml's chain on a real anvil, without Docker:
// anvil with the anvil service's arguments, the chain-setup service's devchain command (twice,
// as two `docker compose up` would), then `tollgate migrate` and `tollgate settle` with the
// compose configuration and the tollgate-settle service's environment, until the settlement
// worker has checked the chain (chain id, the token's decimals and EIP-712 domain) and runs.
// Only the hosts change: anvil:8545 becomes the local anvil, the database a test database.
func TestAnvilComposeChainSetup(t *testing.T) {
	p := loadCompose(t)
	ctx := t.Context()
	url := startAnvilWith(t, p.Services["anvil"].Entrypoint[1:])
	setup := p.Services["chain-setup"].Command
	args := slices.Clone(setup[1:])
	composeRPC := flagValue(setup, "-rpc")
	args[slices.Index(args, composeRPC)] = url
	for run := 1; run <= 2; run++ {
		var out, errOut bytes.Buffer
		if err := devchain.Run(ctx, args, nil, &out, &errOut); err != nil {
			t.Fatalf("chain-setup run %d: %v\n%s", run, err, errOut.String())
		}
		if got := strings.TrimSpace(out.String()); got != devchain.TokenAddress().Hex() {
			t.Fatalf("chain-setup run %d printed %q, want %s", run, got, devchain.TokenAddress().Hex())
		}
	}

	db := testdb.NewWithPool(t, 2)
	cfg := composeConfig(t, p, "tollgate-settle", map[string]string{composeRPC: url})
	for k, v := range p.Services["tollgate-settle"].Environment {
		if v != nil {
			t.Setenv(k, *v)
		}
	}
	t.Setenv("TOLLGATE_CONFIG", cfg.path)
	t.Setenv("TOLLGATE_DATABASE_URL", db.URL)
	var out bytes.Buffer
	if err := mainlib.Main(ctx, []string{"migrate"}, &out, &out); err != nil {
		t.Fatalf("tollgate migrate: %v\n%s", err, out.String())
	}
	settle := runInBackground(t, "settle", cfg.path)
	settle.waitFor(t, "settlement worker running")

	client, err := ethclient.DialContext(ctx, url)
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	hot, _ := devchain.Address(devchain.AnvilKey0)
	if b, err := (chaintest.Sender{Client: client}).BalanceOf(ctx, devchain.TokenAddress(), hot); err != nil || b != 2*1_000_000_000 {
		t.Fatalf("the hot wallet holds %d µUSDC (%v) after two chain-setup runs; want 2 × 1000 USDC", b, err)
	}
}

// loadedConfig is a service's tollgate configuration as `tollgate` reads it.
type loadedConfig struct {
	*config.Config
	path string
}

// composeConfig writes configs.tollgate (with replace applied to its text) to a file and loads
// it as the service would, with the service's environment (except TOLLGATE_CONFIG).
func composeConfig(t *testing.T, p *types.Project, service string, replace map[string]string) loadedConfig {
	t.Helper()
	content := p.Configs["tollgate"].Content
	for from, to := range replace {
		content = strings.ReplaceAll(content, from, to)
	}
	path := filepath.Join(t.TempDir(), "tollgate.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	var env []string
	for k, v := range p.Services[service].Environment {
		if v != nil && k != "TOLLGATE_CONFIG" {
			env = append(env, k+"="+*v)
		}
	}
	cfg, err := config.Load(path, env)
	if err != nil {
		t.Fatalf("%s: tollgate rejects its configuration:\n%v", service, err)
	}
	return loadedConfig{Config: cfg, path: path}
}

// flagValue returns the argument after flag in args ("" if absent).
func flagValue(args []string, flag string) string {
	if i := slices.Index(args, flag); i >= 0 && i+1 < len(args) {
		return args[i+1]
	}
	return ""
}

// startAnvilWith starts tools/node's anvil with args, its --host and --port replaced by a free
// loopback port, and returns its URL once it answers; it stops when the test ends.
func startAnvilWith(t *testing.T, args []string) string {
	t.Helper()
	path, err := chaintest.AnvilPath()
	if err != nil {
		t.Fatal(err)
	}
	p, err := chaintest.FreePort(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	port := strconv.Itoa(p)
	args = slices.Clone(args)
	for flag, v := range map[string]string{"--host": "127.0.0.1", "--port": port} {
		i := slices.Index(args, flag)
		if i < 0 || i+1 >= len(args) {
			t.Fatalf("anvil's arguments %v have no %s", args, flag)
		}
		args[i+1] = v
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	cmd := exec.CommandContext(ctx, path, args...)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start %s %v: %v", path, args, err)
	}
	t.Cleanup(func() {
		cancel()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("anvil %v:\n%s", args, tail(log.String(), 30))
		}
	})
	url := "http://127.0.0.1:" + port
	eventually(t, "anvil answering on "+url, 30*time.Second, func() bool {
		c, err := ethclient.DialContext(t.Context(), url)
		if err != nil {
			return false
		}
		defer c.Close()
		_, err = c.ChainID(t.Context())
		return err == nil
	})
	return url
}

// listensOn reports whether a service's command, or a variable of its environment whose name
// ends in envSuffix ("_ADDR": any listener; "_ADMIN_ADDR": the metrics one), puts a listener
// on port.
func listensOn(s types.ServiceConfig, envSuffix, port string) bool {
	for _, arg := range s.Command {
		if strings.HasSuffix(arg, ":"+port) {
			return true
		}
	}
	for k, v := range s.Environment {
		if strings.HasSuffix(k, envSuffix) && v != nil && strings.HasSuffix(*v, ":"+port) {
			return true
		}
	}
	return false
}
