"""Parallel English/Chinese word lists for the speech grammar (`usam.synth.grammar`).

Each entry carries both languages, so a sentence built from them is translated correctly by construction.
"""
from __future__ import annotations

NAMES = [("Anna", "安娜"), ("Tom", "汤姆"), ("Lucy", "露西"), ("David", "大卫"), ("Emma", "艾玛"),
         ("Jack", "杰克"), ("Sarah", "萨拉"), ("Peter", "彼得"), ("Maria", "玛丽亚"), ("John", "约翰"),
         ("Linda", "琳达"), ("Mike", "迈克"), ("Kate", "凯特"), ("Sam", "山姆"), ("Lily", "莉莉"),
         ("Ben", "本"), ("Grace", "格蕾丝"), ("Oliver", "奥利弗"), ("Sophie", "索菲"), ("Daniel", "丹尼尔"),
         ("Alice", "爱丽丝"), ("Henry", "亨利"), ("Emily", "艾米丽"), ("James", "詹姆斯"), ("Rose", "罗丝"),
         ("Leo", "利奥"), ("Nina", "妮娜"), ("Paul", "保罗"), ("Helen", "海伦"), ("Mark", "马克")]

RELATIVES = [("my mother", "我妈妈"), ("my father", "我爸爸"), ("my sister", "我姐姐"), ("my brother", "我哥哥"),
             ("my neighbour", "我的邻居"), ("our teacher", "我们的老师"), ("the doctor", "医生"),
             ("my friend", "我的朋友"), ("my grandmother", "我奶奶"), ("my uncle", "我叔叔"),
             ("the manager", "经理"), ("my boss", "我的老板"), ("the new student", "新来的学生"),
             ("my cousin", "我的表妹")]

# (English noun without article, Chinese)
PLACES = [("market", "市场"), ("library", "图书馆"), ("station", "车站"), ("park", "公园"), ("hospital", "医院"),
          ("office", "办公室"), ("school", "学校"), ("airport", "机场"), ("museum", "博物馆"), ("bank", "银行"),
          ("post office", "邮局"), ("supermarket", "超市"), ("cinema", "电影院"), ("restaurant", "餐厅"),
          ("hotel", "酒店"), ("beach", "海边"), ("gym", "健身房"), ("bakery", "面包店"), ("bookshop", "书店"),
          ("zoo", "动物园"), ("bus stop", "公交车站"), ("coffee shop", "咖啡店"), ("garden", "花园"),
          ("swimming pool", "游泳池"), ("pharmacy", "药店")]

CITIES = [("London", "伦敦"), ("Paris", "巴黎"), ("Tokyo", "东京"), ("Beijing", "北京"), ("Shanghai", "上海"),
          ("New York", "纽约"), ("Berlin", "柏林"), ("Rome", "罗马"), ("Sydney", "悉尼"), ("Madrid", "马德里"),
          ("Moscow", "莫斯科"), ("Cairo", "开罗"), ("Toronto", "多伦多"), ("Seoul", "首尔"), ("Bangkok", "曼谷"),
          ("Singapore", "新加坡"), ("Chicago", "芝加哥"), ("Boston", "波士顿"), ("Dublin", "都柏林"),
          ("Vienna", "维也纳")]

DAYS = [("Monday", "星期一"), ("Tuesday", "星期二"), ("Wednesday", "星期三"), ("Thursday", "星期四"),
        ("Friday", "星期五"), ("Saturday", "星期六"), ("Sunday", "星期天")]

MONTHS = [("January", "一月"), ("February", "二月"), ("March", "三月"), ("April", "四月"), ("May", "五月"),
          ("June", "六月"), ("July", "七月"), ("August", "八月"), ("September", "九月"), ("October", "十月"),
          ("November", "十一月"), ("December", "十二月")]

PAST_TIMES = [("yesterday", "昨天"), ("this morning", "今天早上"), ("last night", "昨天晚上"),
              ("last week", "上个星期"), ("this afternoon", "今天下午"), ("last month", "上个月"),
              ("two days ago", "两天前"), ("last weekend", "上个周末")] + \
             [(f"on {en}", zh) for en, zh in DAYS] + [(f"last {en}", f"上{zh}") for en, zh in DAYS]

FUTURE_TIMES = [("tomorrow", "明天"), ("next week", "下个星期"), ("tonight", "今天晚上"), ("next month", "下个月"),
                ("this weekend", "这个周末"), ("tomorrow morning", "明天早上"), ("next year", "明年"),
                ("the day after tomorrow", "后天")] + \
               [(f"on {en}", zh) for en, zh in DAYS] + [(f"next {en}", f"下{zh}") for en, zh in DAYS]

# (singular, plural, Chinese noun, Chinese measure word)
FOODS = [("apple", "apples", "苹果", "个"), ("orange", "oranges", "橙子", "个"), ("banana", "bananas", "香蕉", "根"),
         ("egg", "eggs", "鸡蛋", "个"), ("tomato", "tomatoes", "西红柿", "个"), ("potato", "potatoes", "土豆", "个"),
         ("onion", "onions", "洋葱", "个"), ("lemon", "lemons", "柠檬", "个"), ("pear", "pears", "梨", "个"),
         ("peach", "peaches", "桃子", "个"), ("carrot", "carrots", "胡萝卜", "根"), ("cake", "cakes", "蛋糕", "块"),
         ("sandwich", "sandwiches", "三明治", "个"), ("cup of coffee", "cups of coffee", "咖啡", "杯"),
         ("cup of tea", "cups of tea", "茶", "杯"), ("bottle of water", "bottles of water", "水", "瓶"),
         ("bottle of milk", "bottles of milk", "牛奶", "瓶"), ("bowl of rice", "bowls of rice", "米饭", "碗"),
         ("bowl of noodles", "bowls of noodles", "面条", "碗"), ("cucumber", "cucumbers", "黄瓜", "根")]

OBJECTS = [("book", "books", "书", "本"), ("pen", "pens", "笔", "支"), ("notebook", "notebooks", "笔记本", "本"),
           ("chair", "chairs", "椅子", "把"), ("table", "tables", "桌子", "张"), ("ticket", "tickets", "票", "张"),
           ("letter", "letters", "信", "封"), ("umbrella", "umbrellas", "雨伞", "把"), ("key", "keys", "钥匙", "把"),
           ("cup", "cups", "杯子", "个"), ("box", "boxes", "箱子", "个"), ("bag", "bags", "包", "个"),
           ("shirt", "shirts", "衬衫", "件"), ("coat", "coats", "外套", "件"),
           ("pair of shoes", "pairs of shoes", "鞋", "双"), ("picture", "pictures", "画", "幅"),
           ("flower", "flowers", "花", "朵"), ("candle", "candles", "蜡烛", "支"), ("photo", "photos", "照片", "张"),
           ("map", "maps", "地图", "张"), ("newspaper", "newspapers", "报纸", "份"), ("towel", "towels", "毛巾", "条")]

ANIMALS = [("dog", "dogs", "狗", "只"), ("cat", "cats", "猫", "只"), ("bird", "birds", "鸟", "只"),
           ("horse", "horses", "马", "匹"), ("cow", "cows", "牛", "头"), ("rabbit", "rabbits", "兔子", "只"),
           ("duck", "ducks", "鸭子", "只"), ("fish", "fish", "鱼", "条"), ("sheep", "sheep", "羊", "只"),
           ("chicken", "chickens", "鸡", "只"), ("mouse", "mice", "老鼠", "只"), ("goat", "goats", "山羊", "只"),
           ("monkey", "monkeys", "猴子", "只"), ("squirrel", "squirrels", "松鼠", "只")]

PEOPLE = [("student", "students", "学生", "个"), ("child", "children", "孩子", "个"),
          ("visitor", "visitors", "游客", "位"), ("passenger", "passengers", "乘客", "位"),
          ("worker", "workers", "工人", "个"), ("nurse", "nurses", "护士", "位")]

COLOURS = [("red", "红色"), ("blue", "蓝色"), ("green", "绿色"), ("yellow", "黄色"), ("black", "黑色"),
           ("white", "白色"), ("brown", "棕色"), ("pink", "粉色"), ("grey", "灰色"), ("purple", "紫色")]

GARMENTS = [("shirt", "衬衫"), ("coat", "外套"), ("jacket", "夹克"), ("dress", "连衣裙"), ("sweater", "毛衣"),
            ("raincoat", "雨衣")]

EVENTS = [("meeting", "会议"), ("class", "课"), ("film", "电影"), ("concert", "音乐会"), ("game", "比赛"),
          ("party", "聚会"), ("show", "演出"), ("interview", "面试"), ("lecture", "讲座")]

VEHICLES = [("train", "火车"), ("bus", "大巴"), ("flight", "航班"), ("ferry", "渡轮")]

ACTIVITIES = [("reading books", "看书"), ("playing football", "踢足球"), ("playing the piano", "弹钢琴"),
              ("swimming", "游泳"), ("cooking", "做饭"), ("dancing", "跳舞"), ("singing", "唱歌"),
              ("drawing", "画画"), ("running", "跑步"), ("watching films", "看电影"),
              ("listening to music", "听音乐"), ("travelling", "旅行"), ("taking photos", "拍照"),
              ("walking in the park", "在公园散步"), ("riding a bike", "骑自行车"), ("playing chess", "下棋"),
              ("writing letters", "写信"), ("baking bread", "烤面包"), ("fishing", "钓鱼"),
              ("learning languages", "学外语"), ("climbing mountains", "爬山"), ("playing the guitar", "弹吉他")]

REQUESTS = [("close the window", "关上窗户"), ("open the door", "打开门"), ("turn off the light", "关灯"),
            ("turn on the radio", "打开收音机"), ("call a taxi", "叫一辆出租车"), ("speak more slowly", "说慢一点"),
            ("wait a moment", "等一下"), ("pass the salt", "把盐递给我"), ("send me the file", "把文件发给我"),
            ("repeat the question", "重复一下这个问题"), ("water the plants", "给植物浇水"), ("feed the cat", "喂猫"),
            ("wash the dishes", "洗碗"), ("clean the kitchen", "打扫厨房"), ("lock the car", "锁上车"),
            ("bring me a glass of water", "给我拿一杯水"), ("write down your address", "写下你的地址"),
            ("sit down here", "坐在这里")]

SPORTS = [("tennis", "打网球"), ("football", "踢足球"), ("basketball", "打篮球"), ("golf", "打高尔夫"),
          ("table tennis", "打乒乓球"), ("volleyball", "打排球"), ("cards", "打牌"), ("badminton", "打羽毛球")]

WEATHER = [("sunny", "晴朗"), ("warm", "暖和"), ("cold", "冷"), ("hot", "热"), ("cool", "凉快"), ("dry", "干燥"),
           ("humid", "潮湿"), ("mild", "温和")]

FEELINGS = [("tired", "累"), ("happy", "开心"), ("hungry", "饿"), ("cold", "冷"), ("sleepy", "困"),
            ("nervous", "紧张"), ("excited", "兴奋"), ("bored", "无聊"), ("sad", "难过"), ("relaxed", "放松"),
            ("worried", "担心"), ("thirsty", "渴")]

FURNITURE = [("table", "桌子"), ("chair", "椅子"), ("shelf", "架子"), ("desk", "书桌"), ("bed", "床"),
             ("sofa", "沙发"), ("floor", "地板"), ("counter", "柜台")]

JOBS = [("teacher", "老师"), ("doctor", "医生"), ("nurse", "护士"), ("driver", "司机"), ("cook", "厨师"),
        ("farmer", "农民"), ("engineer", "工程师"), ("writer", "作家"), ("pilot", "飞行员"), ("lawyer", "律师"),
        ("painter", "画家"), ("singer", "歌手"), ("police officer", "警察"), ("waiter", "服务员"),
        ("scientist", "科学家"), ("architect", "建筑师"), ("photographer", "摄影师"), ("dentist", "牙医")]

LANGUAGES = [("English", "英语"), ("French", "法语"), ("Chinese", "中文"), ("Spanish", "西班牙语"),
             ("German", "德语"), ("Japanese", "日语"), ("Italian", "意大利语"), ("Russian", "俄语"),
             ("Arabic", "阿拉伯语"), ("Korean", "韩语"), ("Portuguese", "葡萄牙语")]

DISHES = [("fried rice", "炒饭"), ("chicken soup", "鸡汤"), ("vegetable soup", "蔬菜汤"), ("dumplings", "饺子"),
          ("pasta", "意大利面"), ("fish and chips", "炸鱼薯条"), ("a salad", "沙拉"), ("pancakes", "煎饼"),
          ("roast chicken", "烤鸡"), ("beef noodles", "牛肉面"), ("scrambled eggs", "炒鸡蛋"), ("a pizza", "披萨"),
          ("curry", "咖喱"), ("a steak", "牛排")]

TRANSPORT = [("bus", "公交车"), ("train", "火车"), ("subway", "地铁"), ("tram", "电车"), ("ferry", "渡轮")]

APPLIANCES = [("television", "电视"), ("oven", "烤箱"), ("computer", "电脑"), ("radio", "收音机"),
              ("heater", "暖气"), ("fan", "风扇"), ("washing machine", "洗衣机"), ("fridge", "冰箱"),
              ("printer", "打印机"), ("kettle", "水壶")]

TOPICS = [("history", "历史"), ("science", "科学"), ("cooking", "烹饪"), ("music", "音乐"), ("animals", "动物"),
          ("the ocean", "海洋"), ("space", "太空"), ("art", "艺术"), ("health", "健康"), ("sport", "体育"),
          ("travel", "旅行"), ("computers", "电脑"), ("gardening", "园艺"), ("the weather", "天气")]

AILMENTS = [("a headache", "头疼"), ("a cold", "感冒了"), ("a fever", "发烧了"), ("a sore throat", "嗓子疼"),
            ("a stomach ache", "肚子疼"), ("a toothache", "牙疼"), ("a cough", "咳嗽"), ("a backache", "背疼")]

SIBLINGS = [("brother", "brothers", "兄弟", "个"), ("sister", "sisters", "姐妹", "个"),
            ("child", "children", "孩子", "个"), ("cousin", "cousins", "表亲", "个"),
            ("grandchild", "grandchildren", "孙子孙女", "个")]

BUILDINGS = [("hotel", "酒店"), ("hospital", "医院"), ("office building", "办公楼"), ("library", "图书馆"),
             ("school", "学校"), ("apartment building", "公寓楼")]

STREETS = [("Oak", "橡树"), ("Park", "公园"), ("Green", "格林"), ("Market", "市场"), ("Church", "教堂"),
           ("King", "国王"), ("River", "河滨"), ("Hill", "山丘"), ("Station", "车站"), ("Bridge", "桥")]

ROOMS = [("kitchen", "厨房"), ("bedroom", "卧室"), ("living room", "客厅"), ("bathroom", "浴室"),
         ("door", "门"), ("fence", "篱笆")]

SEASONS = [("spring", "春天"), ("summer", "夏天"), ("autumn", "秋天"), ("winter", "冬天")]

CHORES = [("water the plants", "给植物浇水"), ("feed the cat", "喂猫"), ("wash the dishes", "洗碗"),
          ("clean the kitchen", "打扫厨房"), ("lock the car", "锁车"), ("take out the rubbish", "倒垃圾"),
          ("buy some bread", "买些面包"), ("call the dentist", "给牙医打电话"), ("pay the rent", "交房租"),
          ("charge your phone", "给手机充电"), ("close the windows", "关上窗户"), ("walk the dog", "遛狗")]

# Whole everyday sentences without slots.
PHRASES = [("Good morning, how are you?", "早上好，你好吗？"), ("Thank you very much for your help.", "非常感谢你的帮助。"),
           ("I am sorry, I do not understand.", "对不起，我不明白。"), ("See you tomorrow.", "明天见。"),
           ("What is your name?", "你叫什么名字？"), ("Nice to meet you.", "很高兴认识你。"),
           ("Could you say that again?", "你能再说一遍吗？"), ("Let us have lunch together.", "我们一起吃午饭吧。"),
           ("It is raining outside.", "外面在下雨。"), ("I forgot my keys at home.", "我把钥匙忘在家里了。"),
           ("Happy birthday to you.", "祝你生日快乐。"), ("Please turn left at the corner.", "请在拐角处左转。"),
           ("Please turn right at the traffic lights.", "请在红绿灯处右转。"), ("The water is too hot.", "水太热了。"),
           ("My phone is not working.", "我的手机坏了。"), ("We are almost there.", "我们快到了。"),
           ("Be careful, the floor is wet.", "小心，地板是湿的。"), ("Can I have the bill, please?", "请给我账单好吗？"),
           ("Excuse me, where is the toilet?", "请问，洗手间在哪里？"), ("I will call you later.", "我晚点给你打电话。"),
           ("The shop is closed today.", "商店今天关门。"), ("Have a nice weekend.", "周末愉快。"),
           ("Do you speak English?", "你会说英语吗？"), ("I would like a glass of water.", "我想要一杯水。")]
