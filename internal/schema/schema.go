// Package schema lists every package's migrations in the order they are applied. It must stay
// free of go-ethereum: the settlement worker's tables come from settlement/schema, which only
// embeds SQL.
package schema

import (
	api "github.com/tollgate-dev/tollgate/api/schema"
	"github.com/tollgate-dev/tollgate/internal/migrate"
	"github.com/tollgate-dev/tollgate/ledger"
	"github.com/tollgate-dev/tollgate/paywall"
	"github.com/tollgate-dev/tollgate/pricing"
	settlement "github.com/tollgate-dev/tollgate/settlement/schema"
	"github.com/tollgate-dev/tollgate/webhook"
)

// All returns the sources `tollgate migrate` applies.
func All() []migrate.Source {
	return []migrate.Source{
		ledger.Migrations,
		paywall.Migrations,
		pricing.Migrations,
		settlement.Migrations,
		api.Migrations,
		webhook.Migrations,
	}
}
