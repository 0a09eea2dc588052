-- Knowing which checkpoint is best (issue 15). evaluation: the job's early_stopping, grader
-- and result as the API shows them (JSON; NULL: none given). best_step and best_value: the
-- best checkpoint so far by the selection metric, written with that checkpoint's record.
-- parent_job and from_step: a fork's lineage (the job and checkpoint step it continues from).
-- start_checkpoint: the checkpoint (ft:…:ckpt-step-N) a job was started from, whose weights
-- it trains from; model then keeps the base model's key (a models row).
ALTER TABLE jobs ADD COLUMN evaluation TEXT;
ALTER TABLE jobs ADD COLUMN best_step INTEGER;
ALTER TABLE jobs ADD COLUMN best_value DOUBLE PRECISION;
ALTER TABLE jobs ADD COLUMN parent_job TEXT;
ALTER TABLE jobs ADD COLUMN from_step INTEGER;
ALTER TABLE jobs ADD COLUMN start_checkpoint TEXT;
