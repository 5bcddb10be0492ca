-- Flow events the hot tier could not take (Redis down), in publication order, until an
-- instance replays them into their streams under the same ids. Kept here so that a process
-- dying mid-outage loses none.
CREATE TABLE event_outbox (
    seq        INTEGER PRIMARY KEY AUTOINCREMENT,
    flow_id    TEXT NOT NULL,
    event_id   TEXT NOT NULL,
    event_type TEXT NOT NULL,
    payload    TEXT NOT NULL
);
