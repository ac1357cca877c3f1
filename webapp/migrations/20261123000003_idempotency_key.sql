-- The Idempotency-Key a post was created with (the header of POST /api/posts, or the
-- guestbook form's hidden field); NULL for a post sent without one. UNIQUE, so however often
-- and wherever a request is repeated, one post holds its key; ascii_bin, so keys compare
-- byte for byte (case matters), as the header's value does.
ALTER TABLE posts
    ADD COLUMN idempotency_key VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NULL,
    ADD UNIQUE KEY posts_idempotency_key (idempotency_key);
