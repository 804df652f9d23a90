"""The facility network: regions, processing centres, collection and delivery offices."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np

from kpi import contract
from kpi.simulate.config import BOOL, F64, I64

#: code -> (name, capital, latitude, longitude, relative outbound volume).
REGION_INFO: Final[dict[str, tuple[str, str, float, float, float]]] = {
    "CN-AH": ("Anhui", "Hefei", 31.82, 117.23, 3.0),
    "CN-BJ": ("Beijing", "Beijing", 39.90, 116.40, 4.0),
    "CN-CQ": ("Chongqing", "Chongqing", 29.56, 106.55, 2.0),
    "CN-FJ": ("Fujian", "Fuzhou", 26.07, 119.30, 4.0),
    "CN-GD": ("Guangdong", "Guangzhou", 23.13, 113.26, 16.0),
    "CN-GS": ("Gansu", "Lanzhou", 36.06, 103.83, 0.6),
    "CN-GX": ("Guangxi", "Nanning", 22.82, 108.37, 1.5),
    "CN-GZ": ("Guizhou", "Guiyang", 26.65, 106.63, 1.0),
    "CN-HA": ("Henan", "Zhengzhou", 34.75, 113.63, 4.0),
    "CN-HB": ("Hubei", "Wuhan", 30.59, 114.31, 3.0),
    "CN-HE": ("Hebei", "Shijiazhuang", 38.04, 114.51, 4.0),
    "CN-HI": ("Hainan", "Haikou", 20.04, 110.20, 0.5),
    "CN-HL": ("Heilongjiang", "Harbin", 45.80, 126.53, 1.0),
    "CN-HN": ("Hunan", "Changsha", 28.23, 112.94, 3.0),
    "CN-JL": ("Jilin", "Changchun", 43.82, 125.32, 0.8),
    "CN-JS": ("Jiangsu", "Nanjing", 32.06, 118.80, 8.0),
    "CN-JX": ("Jiangxi", "Nanchang", 28.68, 115.86, 2.0),
    "CN-LN": ("Liaoning", "Shenyang", 41.81, 123.43, 2.0),
    "CN-NM": ("Inner Mongolia", "Hohhot", 40.84, 111.75, 0.8),
    "CN-NX": ("Ningxia", "Yinchuan", 38.49, 106.23, 0.3),
    "CN-QH": ("Qinghai", "Xining", 36.62, 101.78, 0.2),
    "CN-SC": ("Sichuan", "Chengdu", 30.57, 104.07, 3.5),
    "CN-SD": ("Shandong", "Jinan", 36.65, 117.12, 5.0),
    "CN-SH": ("Shanghai", "Shanghai", 31.23, 121.47, 5.0),
    "CN-SN": ("Shaanxi", "Xi'an", 34.34, 108.94, 2.0),
    "CN-SX": ("Shanxi", "Taiyuan", 37.87, 112.55, 1.2),
    "CN-TJ": ("Tianjin", "Tianjin", 39.34, 117.36, 1.5),
    "CN-XJ": ("Xinjiang", "Urumqi", 43.83, 87.62, 0.6),
    "CN-XZ": ("Tibet", "Lhasa", 29.65, 91.17, 0.1),
    "CN-YN": ("Yunnan", "Kunming", 25.04, 102.71, 1.5),
    "CN-ZJ": ("Zhejiang", "Hangzhou", 30.27, 120.15, 12.0),
}
#: Remote regions of the default service standard.
REMOTE_REGIONS: Final = ("CN-XZ", "CN-XJ", "CN-QH")
#: Regions where local legs take twice as long (vast, thinly served).
WIDE_REGIONS: Final = ("CN-XZ", "CN-XJ", "CN-QH", "CN-NM")

FT_COLLECTION: Final = 0
FT_PROCESSING: Final = 1
FT_DELIVERY: Final = 2


@dataclass(frozen=True)
class Network:
    """The facility network: ids plus the index arrays the engine routes with."""

    facility: tuple[str, ...]
    name: tuple[str, ...]
    ftype: I64
    region: I64
    #: For collection/delivery offices the processing centre they are attached to.
    home_pc: I64
    co_start: I64
    co_count: I64
    do_start: I64
    do_count: I64
    #: Facilities published without a backlog threshold (not yet calibrated).
    no_threshold: BOOL

    def index(self, facility: str) -> int:
        """Position of a facility id in the network."""
        return self.facility.index(facility)


def build_network() -> Network:
    """The built-in network: 1-2 processing centres, collection and delivery offices per region."""
    ids: list[str] = []
    names: list[str] = []
    ftype: list[int] = []
    region: list[int] = []
    home: list[int] = []
    no_thr: list[bool] = []
    co_start: list[int] = []
    co_count: list[int] = []
    do_start: list[int] = []
    do_count: list[int] = []
    for r, code in enumerate(contract.PROVINCES):
        prov, city, _, _, weight = REGION_INFO[code]
        short = code[3:]
        n_pc = 2 if weight >= 5 else 1
        n_co = min(16, max(2, int(2 + 0.9 * weight + 0.5)))
        n_do = min(20, max(3, int(3 + 1.1 * weight + 0.5)))
        pcs = []
        for k in range(1, n_pc + 1):
            pcs.append(len(ids))
            ids.append(f"PC-{short}-{k:02d}")
            names.append(f"{prov} Processing Centre {k}")
            ftype.append(FT_PROCESSING)
            region.append(r)
            home.append(len(ids) - 1)
            no_thr.append(False)
        co_start.append(len(ids))
        co_count.append(n_co)
        for k in range(1, n_co + 1):
            ids.append(f"CO-{short}-{k:03d}")
            names.append(f"{city} Collection Office {k}")
            ftype.append(FT_COLLECTION)
            region.append(r)
            home.append(pcs[(k - 1) % n_pc])
            # A few offices opened recently: operations has not calibrated them yet.
            no_thr.append(k == 7)
        do_start.append(len(ids))
        do_count.append(n_do)
        for k in range(1, n_do + 1):
            ids.append(f"DO-{short}-{k:03d}")
            names.append(f"{city} Delivery Office {k}")
            ftype.append(FT_DELIVERY)
            region.append(r)
            home.append(pcs[(k - 1) % n_pc])
            no_thr.append(k == 11)
    return Network(
        facility=tuple(ids),
        name=tuple(names),
        ftype=np.array(ftype, dtype=np.int64),
        region=np.array(region, dtype=np.int64),
        home_pc=np.array(home, dtype=np.int64),
        co_start=np.array(co_start, dtype=np.int64),
        co_count=np.array(co_count, dtype=np.int64),
        do_start=np.array(do_start, dtype=np.int64),
        do_count=np.array(do_count, dtype=np.int64),
        no_threshold=np.array(no_thr, dtype=np.bool_),
    )


def region_distances() -> F64:
    """Road distance (km) between regional capitals: great circle times a detour factor."""
    lat = np.radians([REGION_INFO[c][2] for c in contract.PROVINCES])
    lon = np.radians([REGION_INFO[c][3] for c in contract.PROVINCES])
    dlat = lat[:, None] - lat[None, :]
    dlon = lon[:, None] - lon[None, :]
    a = np.sin(dlat / 2) ** 2 + np.cos(lat[:, None]) * np.cos(lat[None, :]) * np.sin(dlon / 2) ** 2
    great_circle: F64 = 2 * 6371.0 * np.arcsin(np.sqrt(a))
    return great_circle * 1.3
