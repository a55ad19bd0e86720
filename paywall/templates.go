package paywall

import (
	"errors"
	"fmt"
	"strings"
	"text/template"

	"github.com/tollgate-dev/tollgate/pricing"
)

// Default message texts, used when a paywall leaves its templates empty.
const (
	DefaultAuthorizeTemplate = "To use {{.Paywall}}, connect a wallet first (once, about a minute): {{.Link}}"
	DefaultTopUpTemplate     = "Your balance ({{.BalanceUSDC}} USDC) is too low for this request. Top up here, then send your message again: {{.Link}}"
)

// maxTemplateLen bounds a template; a paywall message is a sentence and a link.
const maxTemplateLen = 2000

// messageData is what a template sees.
type messageData struct {
	Link        string // the page to open
	Paywall     string // the paywall's name
	BalanceUSDC string // available balance, e.g. "0.42" (top-up message only)
}

// sampleLink is what a template is checked against: the rendered text must contain it.
const sampleLink = "https://pay.example.invalid/connect?t=sample"

// check reports a template that does not parse, fails to render, or loses the link.
func checkTemplate(name, text string) error {
	if len(text) > maxTemplateLen {
		return fmt.Errorf("templates.%s: %d characters; at most %d", name, len(text), maxTemplateLen)
	}
	out, err := render(text, messageData{Link: sampleLink, Paywall: "Sample", BalanceUSDC: "0.00"})
	if err != nil {
		return fmt.Errorf("templates.%s: %w", name, err)
	}
	if !strings.Contains(out, sampleLink) {
		return fmt.Errorf("templates.%s: must show the link with {{.Link}}", name)
	}
	return nil
}

func render(text string, d messageData) (string, error) {
	t, err := template.New("message").Option("missingkey=error").Parse(text)
	if err != nil {
		return "", err
	}
	var b strings.Builder
	if err := t.Execute(&b, d); err != nil {
		return "", err
	}
	if b.Len() == 0 {
		return "", errors.New("renders as nothing")
	}
	return b.String(), nil
}

// AuthorizeMessage is the assistant text asking the user to authorize the paywall.
// A template that fails to render (it was checked when stored) falls back to the default
// text, so the user always gets the link.
func (p Paywall) AuthorizeMessage(link string) string {
	return p.message(p.Templates.Authorize, DefaultAuthorizeTemplate, messageData{Link: link, Paywall: p.Name})
}

// TopUpMessage is the assistant text asking the user to top up, showing the available
// balance. It falls back to the default text like AuthorizeMessage.
func (p Paywall) TopUpMessage(link string, availableMicro int64) string {
	return p.message(p.Templates.TopUp, DefaultTopUpTemplate,
		messageData{Link: link, Paywall: p.Name, BalanceUSDC: pricing.FormatUSDC(availableMicro)})
}

func (p Paywall) message(text, fallback string, d messageData) string {
	if text != "" {
		if out, err := render(text, d); err == nil && strings.Contains(out, d.Link) {
			return out
		}
	}
	out, err := render(fallback, d)
	if err != nil { // the defaults are constants checked by tests
		return d.Link
	}
	return out
}
