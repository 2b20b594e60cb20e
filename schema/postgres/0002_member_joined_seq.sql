-- A member receives the messages sent after they joined: the room's last seq at their join. Receipt counts
-- use it, so a member who joined late is never counted as a recipient of older messages. Members from
-- before this column count from the start (0), as they always did.
ALTER TABLE np_realtime_room_members ADD COLUMN joined_seq BIGINT NOT NULL DEFAULT 0;
