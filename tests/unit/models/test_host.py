from datetime import UTC, datetime

import pytest

from brupop.models.host import CommandStatus, CommandType, OsInfo, UpdateState, UpdateStatus
from brupop.models.wire import WireError

# The reference's example after a successful refresh, as the host sends it (compact).
REFRESHED = (
    '{"update_state":"Available","available_updates":["1.21.0","1.20.3","1.20.2"],'
    '"chosen_update":{"arch":"x86_64","version":"1.21.0","variant":"aws-k8s-1.29"},'
    '"active_partition":{"image":{"arch":"x86_64","version":"1.20.3","variant":"aws-k8s-1.29"},"next_to_boot":true},'
    '"staging_partition":null,"most_recent_command":{"cmd_type":"refresh","cmd_status":"Success",'
    '"timestamp":"2024-10-24T17:02:03.620424496Z","exit_status":0,"stderr":""}}'
)


def test_parses_the_reference_example() -> None:
    status = UpdateStatus.from_json(REFRESHED)
    assert status.update_state is UpdateState.AVAILABLE
    assert status.available_updates == ["1.21.0", "1.20.3", "1.20.2"]
    assert status.chosen_version == "1.21.0"
    assert status.staged_version is None
    assert status.active_partition is not None
    assert status.active_partition.next_to_boot
    command = status.most_recent_command
    assert command is not None
    assert (command.cmd_type, command.cmd_status, command.exit_status) == (
        CommandType.REFRESH,
        CommandStatus.SUCCESS,
        0,
    )
    assert command.timestamp.instant == datetime(2024, 10, 24, 17, 2, 3, 620424, tzinfo=UTC)


def test_tolerates_nulls_deactivate_signals_and_extra_keys() -> None:
    status = UpdateStatus.from_wire(
        {
            "update_state": "Staged",
            "available_updates": [],
            "chosen_update": None,
            "active_partition": {"image": None, "next_to_boot": False},
            "staging_partition": {
                "image": {"arch": "aarch64", "version": "1.21.0", "variant": "v"},
                "next_to_boot": False,
            },
            "most_recent_command": {
                "cmd_type": "deactivate",
                "cmd_status": "Failed",
                "timestamp": "2024-01-01T00:00:00+02:00",
                "exit_status": -9,
                "stderr": None,
            },
            "a_future_field": 1,
        }
    )
    assert status.staged_version == "1.21.0"
    assert status.most_recent_command is not None
    assert status.most_recent_command.cmd_type is CommandType.DEACTIVATE
    assert status.most_recent_command.exit_status == -9
    fresh = UpdateStatus.from_wire(
        {
            "update_state": "Idle",
            "available_updates": [],
            "chosen_update": None,
            "active_partition": None,
            "staging_partition": None,
            "most_recent_command": None,
        }
    )
    assert fresh.most_recent_command is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"update_state": "Downloading"}, "update_state"),
        ({"available_updates": ["v1.2.3"]}, "available_updates"),
        ({"chosen_update": {"arch": "x86_64", "version": "1.2"}}, "chosen_update"),
        (
            {
                "most_recent_command": {
                    "cmd_type": "reboot",
                    "cmd_status": "Success",
                    "timestamp": "2024-01-01T00:00:00Z",
                }
            },
            "most_recent_command.cmd_type",
        ),
    ],
)
def test_malformed_answers_name_the_field(change: dict[str, object], field: str) -> None:
    body = {**UpdateStatus.from_json(REFRESHED).to_wire(), **change}
    with pytest.raises(WireError) as info:
        UpdateStatus.from_wire(body)
    assert field in str(info.value)


def test_os_info() -> None:
    info = OsInfo.from_json(
        '{"pretty_name":"Bottlerocket OS 1.20.3 (aws-k8s-1.29)","variant_id":"aws-k8s-1.29",'
        '"version_id":"1.20.3","build_id":"abcdef12","arch":"x86_64"}'
    )
    assert info.version_id == "1.20.3"
    assert OsInfo.from_wire({"version_id": "1.20.3"}).arch is None
    with pytest.raises(WireError, match="version_id"):
        OsInfo.from_wire({"pretty_name": "x"})
