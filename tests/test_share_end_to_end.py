"""共享申请 end to end on the second city: an approved application is delivered by `gongshu run` after
the night, through the code location (a `share_delivery` run), and a revoked one is not."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.test_end_to_end import DAY, gongshu, second_city  # noqa: F401  (the fixture)

pytestmark = pytest.mark.e2e


# the workflow's storage is tested on both databases in the core ring (test_share_workflow.py,
# test_share_extract.py); the night through the code location once, on PostgreSQL, for CI's time
@pytest.mark.parametrize("warehouse_url", ["postgresql"], indirect=True)
def test_an_approved_application_is_delivered_after_the_night_and_a_revoked_one_is_not(second_city) -> None:  # noqa: F811
    env = second_city
    out = gongshu(["share", "apply", "--requester", "shebao", "--library", "people", "--elements", "full_name,phone",
                   "--purpose", "待遇资格认证", "--until", "2099-12-31"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    app = re.search(r"申请编号 (\S+)", out.stdout).group(1)
    for dept in ("huzheng", "shebao"):
        assert gongshu(["share", "review", app, "--dept", dept, "--agree"], env).returncode == 0
    assert gongshu(["share", "approve", app, "--by", "王局"], env).returncode == 0
    out = gongshu(["run", "--date", DAY.isoformat(), "--no-summary"], env)
    assert out.returncode == 0, out.stdout + out.stderr
    assert re.search(rf"共享提取 {app} {DAY} · run \w+ · [\d.]+ 秒 · 成功", out.stdout), out.stdout
    folder = Path(env["GONGSHU_HOME"]) / "share" / app / DAY.isoformat()
    manifest = json.loads((folder / f"{app}.manifest.json").read_text(encoding="utf-8"))
    assert manifest["requester_name"] == "社保中心" and sorted(manifest["elements"]) == ["full_name", "phone"]
    assert manifest["rows"] == 3 and (folder / f"{app}.xlsx").exists()
    shown = gongshu(["share", "show", app], env).stdout
    assert f"提取 {DAY} · 3 行" in shown

    assert gongshu(["share", "revoke", app, "--by", "王局", "--note", "用途结束"], env).returncode == 0
    out = gongshu(["run", "--date", DAY.isoformat(), "--no-summary"], env)
    assert out.returncode == 0 and "共享提取" not in out.stdout, out.stdout
