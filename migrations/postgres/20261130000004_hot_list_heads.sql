-- A list's log head (head_seq) moves with every group commit. The
-- projection-lag index named it in its predicate, so every such update was
-- a new tuple in every index of the table: thousands of dead versions per
-- list that each lock and update stepped over until vacuum. Without an
-- index over head_seq, and with room left on each page, the update stays on
-- its page (a heap-only tuple) and is pruned there. The projector's lag scan
-- (every few seconds, per replica) reads the table instead.
DROP INDEX IF EXISTS grocery_lists_projection_lag_idx;
ALTER TABLE grocery_lists SET (fillfactor = 70);
