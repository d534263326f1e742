-- An order may answer a share: the snapshot sent to the vendor it orders from.
ALTER TABLE orders ADD COLUMN share_id uuid REFERENCES vendor_shares (id) ON DELETE SET NULL;
CREATE INDEX orders_share_id_idx ON orders (share_id);
