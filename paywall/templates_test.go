package paywall

import (
	"strings"
	"testing"
)

func TestMessages(t *testing.T) {
	const link = "https://pay.example.com/topup?t=abc"
	p := Paywall{Name: "Chat app"}
	if got := p.AuthorizeMessage(link); got != "To use Chat app, connect a wallet first (once, about a minute): "+link {
		t.Errorf("default authorize = %q", got)
	}
	if got := p.TopUpMessage(link, 420000); got != "Your balance (0.42 USDC) is too low for this request. Top up here, then send your message again: "+link {
		t.Errorf("default top-up = %q", got)
	}
	p.Templates = Templates{Authorize: "Hola! Conecta tu billetera: {{.Link}}", TopUp: "Saldo {{.BalanceUSDC}} USDC — recarga: {{.Link}}"}
	if got := p.AuthorizeMessage(link); got != "Hola! Conecta tu billetera: "+link {
		t.Errorf("custom authorize = %q", got)
	}
	if got := p.TopUpMessage(link, 5_000_000); got != "Saldo 5.00 USDC — recarga: "+link {
		t.Errorf("custom top-up = %q", got)
	}
	// A template that went bad (stored before a check existed, or edited in the database)
	// falls back to the default: the user always gets the link.
	for _, bad := range []string{"{{.Nope}}", "{{.Link", "no link here", "{{if .Link}}{{end}}"} {
		p.Templates = Templates{Authorize: bad, TopUp: bad}
		if got := p.AuthorizeMessage(link); !strings.HasSuffix(got, link) || !strings.HasPrefix(got, "To use Chat app") {
			t.Errorf("fallback for %q = %q", bad, got)
		}
		if got := p.TopUpMessage(link, 0); !strings.HasSuffix(got, link) || !strings.Contains(got, "0.00 USDC") {
			t.Errorf("fallback for %q = %q", bad, got)
		}
	}
	for _, def := range []string{DefaultAuthorizeTemplate, DefaultTopUpTemplate} {
		if err := checkTemplate("default", def); err != nil {
			t.Errorf("default template fails its own check: %v", err)
		}
	}
}
