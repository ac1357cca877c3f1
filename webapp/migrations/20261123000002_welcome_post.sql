-- The first post, so a new stack's guestbook is not empty. Inserted once, by whichever web
-- server applied the migrations: a second copy would mean they ran twice.
INSERT INTO posts (name, message)
VALUES ('foobar.com', 'Welcome to the guestbook. Write a post, then reload: the footer says which web server answered and which database node served the read.');
