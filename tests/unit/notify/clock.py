from datetime import UTC, datetime

AT = datetime(2026, 3, 7, 14, 5, 9, 123456, tzinfo=UTC)
