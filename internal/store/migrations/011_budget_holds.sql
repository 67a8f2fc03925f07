-- What each standalone gateway has spent of each budget counter: a gateway
-- may give back only what it spent, so a compromised one cannot refund a
-- task's budget that other gateways enforce.
CREATE TABLE budget_holds (
    holder TEXT NOT NULL,
    key    TEXT NOT NULL,
    held   BIGINT NOT NULL,
    PRIMARY KEY (holder, key)
);
