-- nself-realtime schema (SQLite). Times are epoch milliseconds (BIGINT), flags are 0/1 (BIGINT), JSON is
-- TEXT: the same queries then run on PostgreSQL and on the embedded SQLite file.
-- Every table carries source_account_id: one database serves many nself apps, isolated by it.

CREATE TABLE IF NOT EXISTS np_realtime_rooms (
    source_account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'channel',
    visibility TEXT NOT NULL DEFAULT 'public',
    max_members BIGINT,
    is_active BIGINT NOT NULL DEFAULT 1,
    last_seq BIGINT NOT NULL DEFAULT 0,
    last_message_at BIGINT,
    created_by TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source_account_id, name)
);

CREATE TABLE IF NOT EXISTS np_realtime_room_members (
    source_account_id TEXT NOT NULL,
    room_name TEXT NOT NULL,
    user_id TEXT NOT NULL,
    role TEXT NOT NULL DEFAULT 'member',
    muted BIGINT NOT NULL DEFAULT 0,
    banned BIGINT NOT NULL DEFAULT 0,
    joined_at BIGINT NOT NULL,
    last_read_seq BIGINT NOT NULL DEFAULT 0,
    last_read_at BIGINT,
    PRIMARY KEY (source_account_id, room_name, user_id)
);
CREATE INDEX IF NOT EXISTS np_realtime_room_members_user ON np_realtime_room_members (source_account_id, user_id);

CREATE TABLE IF NOT EXISTS np_realtime_messages (
    id TEXT PRIMARY KEY,
    source_account_id TEXT NOT NULL,
    room_name TEXT NOT NULL,
    seq BIGINT NOT NULL,
    user_id TEXT NOT NULL,
    type TEXT NOT NULL DEFAULT 'text',
    content TEXT NOT NULL,
    thread_id TEXT,
    reply_to TEXT,
    metadata TEXT,
    mentions TEXT,
    attachments TEXT,
    client_message_id TEXT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    edited_at BIGINT,
    deleted_at BIGINT,
    UNIQUE (source_account_id, room_name, seq)
);
CREATE UNIQUE INDEX IF NOT EXISTS np_realtime_messages_client_id
    ON np_realtime_messages (source_account_id, user_id, client_message_id);
CREATE INDEX IF NOT EXISTS np_realtime_messages_updated ON np_realtime_messages (source_account_id, room_name, updated_at);
CREATE INDEX IF NOT EXISTS np_realtime_messages_created ON np_realtime_messages (created_at);

CREATE TABLE IF NOT EXISTS np_realtime_connections (
    socket_id TEXT PRIMARY KEY,
    source_account_id TEXT NOT NULL,
    user_id TEXT,
    node_id TEXT NOT NULL,
    ip TEXT,
    transport TEXT,
    device_type TEXT,
    device_os TEXT,
    device_browser TEXT,
    user_agent TEXT,
    status TEXT NOT NULL DEFAULT 'connected',
    connected_at BIGINT NOT NULL,
    disconnected_at BIGINT,
    disconnect_reason TEXT
);
CREATE INDEX IF NOT EXISTS np_realtime_connections_status ON np_realtime_connections (status, node_id);

CREATE TABLE IF NOT EXISTS np_realtime_events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    source_account_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    user_id TEXT,
    socket_id TEXT,
    room_name TEXT,
    payload TEXT,
    ip TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX IF NOT EXISTS np_realtime_events_created ON np_realtime_events (created_at);

-- Presence that must outlive a restart: last seen, custom status, privacy settings. Heartbeats never write here.
CREATE TABLE IF NOT EXISTS np_realtime_presence (
    source_account_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    status TEXT NOT NULL DEFAULT 'offline',
    custom_text TEXT,
    custom_emoji TEXT,
    custom_expires_at BIGINT,
    last_seen_at BIGINT,
    visibility TEXT NOT NULL DEFAULT 'everyone',
    show_online_status BIGINT NOT NULL DEFAULT 1,
    show_last_seen BIGINT NOT NULL DEFAULT 1,
    allow_read_receipts BIGINT NOT NULL DEFAULT 1,
    invisible_mode BIGINT NOT NULL DEFAULT 0,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (source_account_id, user_id)
);

CREATE TABLE IF NOT EXISTS np_realtime_contacts (
    source_account_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    contact_user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source_account_id, user_id, contact_user_id)
);

CREATE TABLE IF NOT EXISTS np_realtime_reactions (
    source_account_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    emoji TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (source_account_id, message_id, user_id, emoji)
);

CREATE TABLE IF NOT EXISTS np_realtime_deliveries (
    source_account_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    user_id TEXT NOT NULL,
    delivered_at BIGINT NOT NULL,
    PRIMARY KEY (source_account_id, message_id, user_id)
);
