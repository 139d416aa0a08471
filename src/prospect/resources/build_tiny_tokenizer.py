"""Build the tiny test tokenizer shipped in `resources/tiny_tokenizer/` (reproducible).

Run from the repository root:  python src/prospect/resources/build_tiny_tokenizer.py

What it builds: a byte-level BPE tokenizer (the GPT-2 / SmolLM2 scheme, via the
`tokenizers` library) with a small vocabulary (`VOCAB_SIZE`), trained on the short
English + Arabic corpus below. Byte-level means every string, in any script, encodes
without an unknown token: characters the merges never saw fall back to their UTF-8
bytes, each of which is in the 256-symbol base alphabet.

Special tokens (ids fixed by their order, before any merge):
  0 `<|pad|>`        padding (distinct from eos, so tests catch masks that confuse them)
  1 `<|endoftext|>`  bos
  2 `<|im_start|>`   start of a chat turn
  3 `<|im_end|>`     end of a chat turn; also eos, as in SmolLM2-Instruct, so generation
                     stops at the end of the assistant turn
Like SmolLM2, the tokenizer adds no BOS/EOS by itself; the chat template is ChatML:
`<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, and with
`add_generation_prompt` a trailing `<|im_start|>assistant\\n`.

The template is written into `tokenizer_config.json` (not a separate
`chat_template.jinja`), so the directory loads with `AutoTokenizer.from_pretrained(dir)`
offline under any recent transformers.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

VOCAB_SIZE = 800
PAD, BOS, IM_START, IM_END = "<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, BOS, IM_START, IM_END]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

ENGLISH = """\
What is the capital of France? The capital of France is Paris.
What is the capital of Egypt? The capital of Egypt is Cairo.
Please answer the question briefly and honestly.
I am not sure, but I think the answer is yes.
The model should prefer helpful, harmless and honest answers.
A desirable answer is correct and polite; an undesirable answer is wrong or rude.
The chosen response is better than the rejected response.
Prospect theory says that losses loom larger than gains.
Kahneman and Tversky studied how people make decisions under risk.
The reference model stays frozen while the policy model is trained.
Write a short poem about the sea and the moon.
Translate the following sentence into Arabic: good morning, my friend.
How many days are there in a week? There are seven days in a week.
Water boils at one hundred degrees Celsius at sea level.
The quick brown fox jumps over the lazy dog.
Can you explain how a neural network learns from data?
It learns by adjusting its weights to reduce a loss on the training examples.
Thank you for your help! You are welcome.
The weather today is sunny with a light breeze.
Numbers: 0 1 2 3 4 5 6 7 8 9 10 42 100 2024 3.14
Summarize the article in two sentences, please.
The user asked a question and the assistant gave an answer.
This answer is factual. That answer is not factual and should be rejected.
Safety matters: never give instructions that could hurt someone.
Learning rate, batch size and the number of epochs are training settings.
She reads a book every evening before she goes to sleep.
The train leaves the station at nine o'clock in the morning.
Mathematics: two plus two equals four, and three times three is nine.
Where is the nearest library? It is next to the park.
Good answers are clear, short and correct.
"""

ARABIC = """\
ما هي عاصمة فرنسا؟ عاصمة فرنسا هي باريس.
ما هي عاصمة مصر؟ عاصمة مصر هي القاهرة.
من فضلك أجب عن السؤال باختصار وبصدق.
لست متأكدا، لكنني أظن أن الجواب نعم.
يجب أن يفضل النموذج الإجابات المفيدة والصادقة وغير الضارة.
الإجابة المرغوبة صحيحة ومهذبة، والإجابة غير المرغوبة خاطئة أو فظة.
الرد المختار أفضل من الرد المرفوض.
تقول نظرية الاحتمالات إن الخسائر تبدو أكبر من المكاسب.
درس كانيمان وتفيرسكي كيف يتخذ الناس قراراتهم في ظل المخاطرة.
يبقى النموذج المرجعي ثابتا بينما يتم تدريب نموذج السياسة.
اكتب قصيدة قصيرة عن البحر والقمر.
صباح الخير يا صديقي، كيف حالك اليوم؟
كم عدد أيام الأسبوع؟ في الأسبوع سبعة أيام.
يغلي الماء عند مئة درجة مئوية على مستوى سطح البحر.
هل يمكنك أن تشرح كيف تتعلم الشبكة العصبية من البيانات؟
شكرا جزيلا على مساعدتك! على الرحب والسعة.
الطقس اليوم مشمس مع نسيم خفيف.
لخص المقال في جملتين من فضلك.
سأل المستخدم سؤالا وأعطى المساعد إجابة.
هذه الإجابة صحيحة، وتلك الإجابة غير صحيحة ويجب رفضها.
السلامة مهمة: لا تعط أبدا تعليمات قد تؤذي أحدا.
تقرأ كتابا كل مساء قبل أن تنام.
يغادر القطار المحطة في الساعة التاسعة صباحا.
اثنان زائد اثنين يساوي أربعة.
أين أقرب مكتبة؟ إنها بجوار الحديقة.
الإجابات الجيدة واضحة وقصيرة وصحيحة.
جيد، سيء، ممتاز، مقبول، مرفوض، مفضل.
اللغة العربية جميلة وغنية بالمفردات.
"""


def corpus() -> list[str]:
    """The training lines (English and Arabic), in a fixed order."""
    return [line for line in (ENGLISH + ARABIC).splitlines() if line.strip()]


def build(out_dir: Path) -> Path:
    """Train the tokenizer and write `tokenizer.json`, `tokenizer_config.json`, `special_tokens_map.json`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        # Every byte is in the vocabulary, whatever the corpus holds: no unknown tokens.
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    # Repeat the corpus so that pair counts clear min_frequency deterministically.
    tok.train_from_iterator(corpus() * 3, trainer=trainer)

    out_dir.mkdir(parents=True, exist_ok=True)
    tok.save(str(out_dir / "tokenizer.json"))
    added = {
        str(tok.token_to_id(t)): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": True,
        }
        for t in SPECIAL_TOKENS
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": BOS,
        "eos_token": IM_END,
        "pad_token": PAD,
        "unk_token": None,
        "add_bos_token": False,
        "add_eos_token": False,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 2048,
        "padding_side": "right",
        "chat_template": CHAT_TEMPLATE,
    }
    (out_dir / "tokenizer_config.json").write_text(
        json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    special = {"bos_token": BOS, "eos_token": IM_END, "pad_token": PAD, "additional_special_tokens": [IM_START, IM_END]}
    (out_dir / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n", encoding="utf-8")
    return out_dir


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parent / "tiny_tokenizer"
    print(build(target))
