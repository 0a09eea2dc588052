-- bf16 mixed precision (issue 14): the arithmetic of a job's matrix products, fp32 or bf16
-- (the API's "precision"). Jobs made before it trained in fp32.
ALTER TABLE jobs ADD COLUMN math_precision TEXT NOT NULL DEFAULT 'fp32';
