-- 0007's inline CHECK on purpose, as CockroachDB names it (0015 replaces it): "check" and, for
-- each column the expression names, "_" and the column (checkConstraintDefaultName in its
-- declarative schema changer, GenerateMaybeDuplicateNameForCheckConstraint before it).
ALTER TABLE settlement_txs DROP CONSTRAINT IF EXISTS check_purpose
