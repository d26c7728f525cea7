//! Static Huzhou reference tables the generators draw from: divisions (GB/T 2260, domain.md §6.3),
//! towns, villages, roads, water bodies, hills, eco joint police stations, names, enterprise words,
//! monitoring points, and the text templates for each kind of ecological incident.

use rand::Rng;
use rand::rngs::StdRng;

/// One county-level division of Huzhou.
pub(crate) struct Division {
    /// GB/T 2260 code.
    pub code: &'static str,
    /// Full name, e.g. 吴兴区.
    pub name: &'static str,
    /// Short name, e.g. 吴兴 (used in department names like 湖州市生态环境局吴兴分局).
    pub short: &'static str,
    /// One-character abbreviation used in law-enforcement case numbers.
    pub abbr: &'static str,
    pub towns: &'static [&'static str],
    pub villages: &'static [&'static str],
    pub roads: &'static [&'static str],
    pub waters: &'static [&'static str],
    pub hills: &'static [&'static str],
    pub stations: &'static [&'static str],
    /// WGS-84 box (lng_min, lng_max, lat_min, lat_max), kept inside 119.2–120.45E, 30.45–31.15N.
    pub bbox: (f64, f64, f64, f64),
}

pub(crate) const DIVISIONS: [Division; 5] = [
    Division {
        code: "330502",
        name: "吴兴区",
        short: "吴兴",
        abbr: "吴",
        towns: &["织里镇", "八里店镇", "妙西镇", "埭溪镇", "东林镇", "道场乡", "环渚街道", "滨湖街道"],
        villages: &["义皋村", "杨溇村", "伍浦村", "许溇村", "戴山村", "妙西村", "大钱村", "潘店村"],
        roads: &["人民路", "凤凰路", "青铜路", "红丰路", "环渚路", "织里大道"],
        waters: &["太湖", "东苕溪", "旄儿港", "长兜港", "大钱港"],
        hills: &["弁山", "道场山", "妙峰山"],
        stations: &["吴兴区太湖生态联勤警务站", "吴兴区东苕溪生态联勤警务站"],
        bbox: (119.95, 120.25, 30.75, 31.02),
    },
    Division {
        code: "330503",
        name: "南浔区",
        short: "南浔",
        abbr: "浔",
        towns: &["南浔镇", "练市镇", "双林镇", "菱湖镇", "和孚镇", "善琏镇", "旧馆镇", "千金镇"],
        villages: &["荻港村", "息塘村", "射中村", "沈庄漾村", "含山村", "石淙村", "横街村"],
        roads: &["向阳路", "适园路", "人瑞路", "南林路", "东大街"],
        waters: &["南浔頔塘", "京杭运河", "练市塘", "双林塘"],
        hills: &["含山"],
        stations: &["南浔区荻港生态联勤警务站", "南浔区运河生态联勤警务站"],
        bbox: (120.15, 120.45, 30.70, 30.95),
    },
    Division {
        code: "330521",
        name: "德清县",
        short: "德清",
        abbr: "德",
        towns: &["武康街道", "乾元镇", "新市镇", "洛舍镇", "钟管镇", "禹越镇", "雷甸镇", "莫干山镇", "下渚湖街道"],
        villages: &["二都村", "新琪村", "仙潭村", "庾村", "劳岭村", "五四村", "东衡村"],
        roads: &["武康路", "永安街", "千秋街", "北湖街", "乾元路"],
        waters: &["德清下渚湖", "东苕溪", "余英溪", "对河口水库"],
        hills: &["莫干山", "防风山"],
        stations: &["德清县下渚湖生态联勤警务站", "德清县莫干山生态联勤警务站"],
        bbox: (119.80, 120.20, 30.45, 30.70),
    },
    Division {
        code: "330522",
        name: "长兴县",
        short: "长兴",
        abbr: "长",
        towns: &[
            "雉城街道",
            "太湖街道",
            "画溪街道",
            "洪桥镇",
            "李家巷镇",
            "夹浦镇",
            "林城镇",
            "泗安镇",
            "煤山镇",
            "水口乡",
        ],
        villages: &["图影村", "新塘村", "夹浦村", "八都岕村", "顾渚村", "川步村", "白岘村"],
        roads: &["明珠路", "金陵路", "画溪大道", "太湖大道", "长兴大道"],
        waters: &["太湖", "长兴港", "泗安塘", "合溪港"],
        hills: &["顾渚山", "雉山", "龙山"],
        stations: &["长兴县太湖图影生态联勤警务站", "长兴县顾渚生态联勤警务站"],
        bbox: (119.55, 119.98, 30.90, 31.15),
    },
    Division {
        code: "330523",
        name: "安吉县",
        short: "安吉",
        abbr: "安",
        towns: &[
            "递铺街道",
            "昌硕街道",
            "孝丰镇",
            "天荒坪镇",
            "梅溪镇",
            "鄣吴镇",
            "杭垓镇",
            "报福镇",
            "章村镇",
            "山川乡",
        ],
        villages: &["余村", "鲁家村", "高家堂村", "大溪村", "横溪坞村", "报福村", "上舍村"],
        roads: &["递铺路", "天目路", "昌硕路", "灵芝路", "胜利路"],
        waters: &["西苕溪", "赋石水库", "老石坎水库", "浒溪"],
        hills: &["龙王山", "天荒坪", "灵峰山"],
        stations: &["安吉县余村生态联勤警务站", "安吉县龙王山生态联勤警务站"],
        bbox: (119.25, 119.75, 30.45, 30.85),
    },
];

pub(crate) const SURNAMES: &[&str] = &[
    "王", "李", "张", "刘", "陈", "杨", "黄", "赵", "吴", "周", "徐", "孙", "马", "朱", "胡", "郭", "何", "高", "林",
    "沈", "钱", "姚", "费", "潘", "俞", "闵", "施", "钮", "姜", "邱",
];

pub(crate) const GIVEN: &[&str] = &[
    "伟", "芳", "娜", "敏", "静", "丽", "强", "磊", "军", "洋", "勇", "艳", "杰", "娟", "涛", "明", "超", "秀英", "霞",
    "平", "刚", "桂英", "建华", "国强", "志刚", "海燕", "晓东", "立新", "春梅", "雪芳", "鑫", "浩", "宇轩", "梓涵",
    "子豪", "欣怡", "建国", "金根", "美华", "根宝", "文杰", "佳怡",
];

pub(crate) const BRANDS: &[&str] = &[
    "鑫达", "恒盛", "永兴", "金诚", "宏远", "天盛", "瑞丰", "森茂", "绿源", "兴旺", "佳禾", "新峰", "润泽", "东方",
    "万通", "湖韵", "苕溪", "竹韵", "安顺", "博达", "振华", "龙腾", "华宇", "嘉盛",
];

/// (industry, company-name suffix, 个体户 shop word, 合作社 product)
pub(crate) const INDUSTRIES: &[(&str, &str, &str, &str)] = &[
    ("建材", "建材有限公司", "建材经营部", "苗木"),
    ("石料开采", "矿业有限公司", "石料加工厂", "苗木"),
    ("化工", "化工有限公司", "化工经营部", "蔬菜"),
    ("纺织印染", "印染有限公司", "印花加工厂", "湖羊"),
    ("童装制造", "童装有限公司", "童装加工厂", "蚕桑"),
    ("竹木制品", "竹木制品有限公司", "竹制品加工厂", "毛竹"),
    ("水产养殖", "水产养殖有限公司", "水产养殖场", "水产"),
    ("茶叶种植", "茶业有限公司", "茶叶经营部", "白茶"),
    ("砂石运输", "砂石运输有限公司", "砂石经营部", "苗木"),
    ("废旧物资回收", "再生资源回收有限公司", "废品收购站", "蔬菜"),
    ("餐饮", "餐饮管理有限公司", "农家乐", "果蔬"),
    ("电池制造", "电源有限公司", "电瓶经营部", "蔬菜"),
    ("家具制造", "家具有限公司", "椅业加工厂", "毛竹"),
    ("建筑施工", "建设有限公司", "装修队", "苗木"),
];

/// Ecological incident categories shared by 110, 12345 and law enforcement.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Cat {
    IllegalFishing,
    SandMining,
    TreeFelling,
    WasteDumping,
    Hunting,
    FarmlandOccupation,
    Pollution,
}

pub(crate) const CATS: [(Cat, u32); 7] = [
    (Cat::IllegalFishing, 24),
    (Cat::SandMining, 10),
    (Cat::TreeFelling, 12),
    (Cat::WasteDumping, 18),
    (Cat::Hunting, 8),
    (Cat::FarmlandOccupation, 10),
    (Cat::Pollution, 18),
];

impl Cat {
    /// 110 案件类别 (ajlb).
    pub fn police_label(self) -> &'static str {
        match self {
            Cat::IllegalFishing => "非法捕捞",
            Cat::SandMining => "非法采砂",
            Cat::TreeFelling => "滥伐林木",
            Cat::WasteDumping => "倾倒固废",
            Cat::Hunting => "非法狩猎",
            Cat::FarmlandOccupation => "非法占用农用地",
            Cat::Pollution => "排污",
        }
    }

    /// 110 报警内容 templates. Placeholders: {water} {hill} {town} {village} {n} {plate}.
    pub fn police_texts(self) -> &'static [&'static str] {
        match self {
            Cat::IllegalFishing => &[
                "报警人称在{water}{village}段有人使用电瓶电鱼，约{n}人，现场有一条小船。",
                "{water}边有人在禁渔期用地笼网捕鱼，请民警到场处理。",
                "有人在{water}岸边用多钩钓具偷钓，已钓上来不少鱼。",
            ],
            Cat::SandMining => &[
                "{water}{village}附近河道有采砂船夜间偷采河砂，机器声很大。",
                "有挖掘机在{water}河滩上挖砂，并用货车（{plate}）运走。",
            ],
            Cat::TreeFelling => {
                &["{town}{village}后山有人砍伐松树，已砍倒约{n}棵。", "{hill}山脚有人成片砍伐毛竹，没有看到采伐证。"]
            }
            Cat::WasteDumping => &[
                "一辆渣土车（{plate}）在{town}{village}路边倾倒建筑垃圾后离开。",
                "{water}岸边堆放大量不明固体废物，有刺鼻气味。",
            ],
            Cat::Hunting => {
                &["有人在{hill}上私设捕鸟网，网上挂着{n}只鸟。", "{hill}林子里发现多个猎夹，疑似有人非法狩猎野猪。"]
            }
            Cat::FarmlandOccupation => &[
                "{town}{village}有人在农田里用土方回填并搭建厂房。",
                "{village}一片基本农田被挖开，正在堆放砂石，车辆{plate}在运土。",
            ],
            Cat::Pollution => &[
                "{water}{village}段河水发黑发臭，疑似附近企业偷排废水。",
                "{town}有工厂夜里通过暗管往{water}排放污水，水面有大量泡沫。",
            ],
        }
    }

    /// 12345 title and content templates.
    pub fn hotline_texts(self) -> (&'static [&'static str], &'static [&'static str]) {
        match self {
            Cat::IllegalFishing => (
                &["关于{water}禁渔期有人电鱼的举报", "反映{water}{village}段非法捕捞问题"],
                &["市民反映：近{n}天晚上{water}{village}段经常有人驾小船电鱼，破坏渔业资源，希望有关部门加强巡查。"],
            ),
            Cat::SandMining => (
                &["关于{water}河道夜间偷采河砂的投诉"],
                &["来电人反映{water}{village}附近每天夜里有采砂船作业，河岸已被挖塌，要求尽快查处。"],
            ),
            Cat::TreeFelling => (
                &["反映{town}{village}山林被滥砍滥伐", "关于{hill}毛竹林被砍伐的投诉"],
                &["市民反映{town}{village}后山近期有人大面积砍伐林木约{n}棵，怀疑无采伐许可证。"],
            ),
            Cat::WasteDumping => (
                &["关于{town}{road}沿线偷倒建筑垃圾的投诉", "反映{water}岸边堆放固废"],
                &["来电人称{town}{road}附近有渣土车夜间偷倒建筑垃圾，已堆积{n}车左右，影响通行和环境。"],
            ),
            Cat::Hunting => (
                &["关于{hill}有人设网捕鸟的举报"],
                &["市民反映在{hill}游步道附近看到大量捕鸟网，网上有鸟类被困，请求处理。"],
            ),
            Cat::FarmlandOccupation => (
                &["反映{village}农田被违规占用建房", "关于{town}基本农田堆放砂石的投诉"],
                &["来电人反映{town}{village}有人在承包的农田上回填土方并建造简易厂房，面积约{n}亩。"],
            ),
            Cat::Pollution => (
                &["关于{water}{village}段疑似偷排污水的投诉", "反映{town}{road}附近工厂废气异味扰民"],
                &["市民反映：{water}{village}段近{n}天河水发黑发臭，怀疑附近企业夜间偷排，希望相关部门尽快查处。"],
            ),
        }
    }

    /// The handling department for a 12345 ticket in a division.
    pub fn handling_dept(self, d: &Division) -> String {
        match self {
            Cat::Pollution => format!("湖州市生态环境局{}分局", d.short),
            Cat::WasteDumping => format!("{}综合行政执法局", d.name),
            Cat::TreeFelling | Cat::FarmlandOccupation | Cat::SandMining => {
                format!("湖州市自然资源和规划局{}分局", d.short)
            }
            Cat::IllegalFishing => format!("{}农业农村局", d.name),
            Cat::Hunting => format!("湖州市公安局{}分局", d.short),
        }
    }
}

/// Law-enforcement violations: (violation, legal basis, min yuan, max yuan, typically a company?).
pub(crate) const VIOLATIONS: &[(&str, &str, u64, u64, bool)] = &[
    ("超标排放水污染物", "《中华人民共和国水污染防治法》", 100_000, 1_000_000, true),
    ("未按规定贮存工业固体废物", "《中华人民共和国固体废物污染环境防治法》", 10_000, 500_000, true),
    ("擅自倾倒建筑垃圾", "《城市建筑垃圾管理规定》", 5_000, 100_000, false),
    ("未经批准擅自采砂", "《中华人民共和国水法》", 20_000, 300_000, true),
    ("擅自改变林地用途", "《中华人民共和国森林法》", 10_000, 200_000, false),
    ("非法占用耕地", "《中华人民共和国土地管理法》", 20_000, 400_000, false),
    ("露天焚烧垃圾", "《中华人民共和国大气污染防治法》", 500, 20_000, false),
    ("施工扬尘防治措施不到位", "《中华人民共和国大气污染防治法》", 10_000, 100_000, true),
    ("夜间违规施工噪声扰民", "《中华人民共和国噪声污染防治法》", 2_000, 50_000, true),
];

/// A water-quality monitoring point (CGCS2000 ≈ WGS-84 coordinates).
#[derive(Clone, Copy)]
pub(crate) struct Point {
    pub code: &'static str,
    pub name: &'static str,
    pub water: &'static str,
    /// Index into [`DIVISIONS`].
    pub division: usize,
    pub lng: f64,
    pub lat: f64,
    /// GB 3838 target class (2 = Ⅱ, 3 = Ⅲ).
    pub target: u8,
    /// Lakes and reservoirs have the stricter total-phosphorus limits.
    pub lake: bool,
}

pub(crate) const POINTS: &[Point] = &[
    Point {
        code: "330502WQ01",
        name: "小梅口",
        water: "太湖",
        division: 0,
        lng: 120.112,
        lat: 30.946,
        target: 3,
        lake: true,
    },
    Point {
        code: "330502WQ02",
        name: "城北水厂取水口",
        water: "东苕溪",
        division: 0,
        lng: 120.078,
        lat: 30.905,
        target: 2,
        lake: false,
    },
    Point {
        code: "330502WQ03",
        name: "杨家埠",
        water: "西苕溪",
        division: 0,
        lng: 119.985,
        lat: 30.842,
        target: 3,
        lake: false,
    },
    Point {
        code: "330503WQ01",
        name: "南浔镇区",
        water: "南浔頔塘",
        division: 1,
        lng: 120.421,
        lat: 30.878,
        target: 3,
        lake: false,
    },
    Point {
        code: "330503WQ02",
        name: "练市",
        water: "京杭运河",
        division: 1,
        lng: 120.383,
        lat: 30.722,
        target: 3,
        lake: false,
    },
    Point {
        code: "330521WQ01",
        name: "德清大桥",
        water: "东苕溪",
        division: 2,
        lng: 119.982,
        lat: 30.551,
        target: 2,
        lake: false,
    },
    Point {
        code: "330521WQ02",
        name: "下渚湖湖心",
        water: "德清下渚湖",
        division: 2,
        lng: 119.968,
        lat: 30.533,
        target: 3,
        lake: true,
    },
    Point {
        code: "330522WQ01",
        name: "长兴港入湖口",
        water: "长兴港",
        division: 3,
        lng: 119.951,
        lat: 31.028,
        target: 3,
        lake: false,
    },
    Point {
        code: "330522WQ02",
        name: "泗安",
        water: "泗安塘",
        division: 3,
        lng: 119.681,
        lat: 30.889,
        target: 3,
        lake: false,
    },
    Point {
        code: "330522WQ03",
        name: "新塘港",
        water: "太湖",
        division: 3,
        lng: 119.962,
        lat: 31.071,
        target: 3,
        lake: true,
    },
    Point {
        code: "330523WQ01",
        name: "荆湾",
        water: "西苕溪",
        division: 4,
        lng: 119.692,
        lat: 30.668,
        target: 2,
        lake: false,
    },
    Point {
        code: "330523WQ02",
        name: "赋石水库坝前",
        water: "赋石水库",
        division: 4,
        lng: 119.531,
        lat: 30.552,
        target: 2,
        lake: true,
    },
];

/// 12369 complaint pollution types with sub-types.
pub(crate) const POLLUTION_TYPES: &[(&str, &[&str], u32)] = &[
    ("大气", &["恶臭异味", "烟粉尘", "工业废气"], 50),
    ("噪声", &["建筑施工噪声", "工业噪声", "社会生活噪声"], 30),
    ("水", &["工业废水", "生活污水", "养殖废水"], 12),
    ("固废", &["建筑垃圾", "工业固废", "危险废物"], 6),
    ("生态破坏", &["非法采砂", "毁林", "湿地破坏"], 2),
];

pub(crate) fn pick<'a>(rng: &mut StdRng, items: &'a [&'a str]) -> &'a str {
    if items.is_empty() {
        return "";
    }
    items[rng.random_range(0..items.len())]
}

pub(crate) fn weighted<T: Copy>(rng: &mut StdRng, items: &[(T, u32)], fallback: T) -> T {
    let total: u32 = items.iter().map(|(_, w)| *w).sum();
    if total == 0 {
        return fallback;
    }
    let mut r = rng.random_range(0..total);
    for (t, w) in items {
        if r < *w {
            return *t;
        }
        r -= w;
    }
    fallback
}

/// A Chinese full name: surname + one or two given characters.
pub(crate) fn person_name(rng: &mut StdRng) -> String {
    format!("{}{}", pick(rng, SURNAMES), pick(rng, GIVEN))
}

/// A mobile number 13x/15x/18x.
pub(crate) fn phone(rng: &mut StdRng) -> String {
    let prefix = ["13", "15", "18"][rng.random_range(0..3)];
    format!("{prefix}{}{:08}", rng.random_range(0..10u32), rng.random_range(0..100_000_000u32))
}

const PLATE_LETTERS: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ";
const PLATE_ALNUM: &[u8] = b"0123456789ABCDEFGHJKLMNPQRSTUVWXYZ";

/// A Huzhou plate (浙E…): ordinary `浙E` + letter/digit mix, or a new-energy `浙ED12345`.
pub(crate) fn plate(rng: &mut StdRng) -> String {
    let mut s = String::from("浙E");
    if rng.random_bool(0.15) {
        s.push(if rng.random_bool(0.5) { 'D' } else { 'F' });
        for _ in 0..5 {
            s.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
        return s;
    }
    s.push(char::from(PLATE_LETTERS[rng.random_range(0..PLATE_LETTERS.len())]));
    for i in 0..4 {
        if i == 0 && rng.random_bool(0.3) {
            s.push(char::from(PLATE_ALNUM[rng.random_range(10..PLATE_ALNUM.len())]));
        } else {
            s.push(char::from(b'0' + rng.random_range(0..10u8)));
        }
    }
    s
}

/// A uniformly random WGS-84 point inside a division's box.
pub(crate) fn point_in(rng: &mut StdRng, d: &Division) -> (f64, f64) {
    let (x0, x1, y0, y1) = d.bbox;
    (rng.random_range(x0..x1), rng.random_range(y0..y1))
}

/// Replace template placeholders.
pub(crate) fn fill(t: &str, vars: &[(&str, &str)]) -> String {
    let mut s = t.to_string();
    for (k, v) in vars {
        s = s.replace(k, v);
    }
    s
}
