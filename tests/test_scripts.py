"""Script parsing: every format, its timestamps and overrides, and errors that name the line."""

from __future__ import annotations

import json

import pytest

from studio.errors import InvalidRequest
from studio.scripts import MAX_SCENES, format_seconds, parse_script, parse_timestamp, read_script_file


def texts(script):
    return [scene.text for scene in script.scenes]


def error_of(source, **kw) -> str:
    with pytest.raises(InvalidRequest) as info:
        parse_script(source, **kw)
    return str(info.value)


# -- plain text --------------------------------------------------------------------------------


def test_text_one_scene_per_line_with_timestamps_overrides_and_comments():
    script = parse_script(
        "# storyboard for the teaser\n"
        "00:00:05 A lighthouse at dusk --seed 5 --style cinematic\n"
        "\n"
        "[00:12.5] Waves crash on the rocks --negative \"people, text\" --size 640x384\n"
        "--prompt \"a gull over the sea\" --steps 8 --cfg_scale 6\n"
        "The keeper climbs the stairs\n")
    assert script.format == "text"
    assert texts(script) == ["A lighthouse at dusk", "Waves crash on the rocks", "a gull over the sea",
                             "The keeper climbs the stairs"]
    first, second, third, fourth = script.scenes
    assert (first.timestamp, first.start, first.line) == ("00:00:05", 5.0, 2)
    assert first.overrides == {"seed": 5, "style": "cinematic"}
    assert (second.timestamp, second.start, second.line) == ("00:12.5", 12.5, 4)
    assert second.overrides == {"negative_prompt": "people, text", "width": 640, "height": 384}
    assert third.overrides == {"steps": 8, "guidance": 6.0} and third.line == 5
    assert fourth.timestamp is None and fourth.overrides == {} and fourth.line == 6
    assert [s.index for s in script.scenes] == [0, 1, 2, 3]


def test_text_paragraphs_become_one_scene_each_and_can_be_forced_either_way():
    text = "The storm gathers over the bay,\nboats hurry home.\n\nMorning: calm water --seed 3\n"
    script = parse_script(text)
    assert texts(script) == ["The storm gathers over the bay, boats hurry home.", "Morning: calm water"]
    assert [s.line for s in script.scenes] == [1, 4] and script.scenes[1].overrides == {"seed": 3}
    assert len(parse_script(text, format="lines").scenes) == 3
    # lines without blank lines between them are one scene each, never one paragraph
    assert len(parse_script("a\nb\nc").scenes) == 3


@pytest.mark.parametrize("line, message", [
    ("a fox --seed five", "line 2: --seed must be a whole number, not 'five'"),
    ("a fox --zoom 3", "line 2: unknown option --zoom"),
    ("a fox --seed", "line 2: --seed needs a value"),
    ("a fox --style \"film noir", "line 2: cannot read the options"),
    ("a fox --size 12by4", "line 2: size '12by4' is not WIDTHxHEIGHT"),
    ("--seed 4", "line 2: the scene has no text"),
])
def test_text_errors_name_the_line(line, message):
    assert message in error_of(f"first scene\n{line}\nthird scene")


# -- CSV ---------------------------------------------------------------------------------------


def test_csv_with_quoted_commas_multiline_cells_override_columns_and_semicolons():
    csv_text = ('timestamp,text,seed,notes\n'
                '00:00:01,"A lighthouse, at dusk",7,ignored\n'
                '\n'
                '0:04,"Waves\ncrash",,\n'
                'intro,A title card,,\n')
    script = parse_script(csv_text, name="teaser.csv")
    assert script.format == "csv"
    assert texts(script) == ["A lighthouse, at dusk", "Waves crash", "A title card"]
    assert [s.timestamp for s in script.scenes] == ["00:00:01", "0:04", "intro"]
    assert [s.start for s in script.scenes] == [1.0, 4.0, None]  # "intro" is a label, kept as written
    assert [s.line for s in script.scenes] == [2, 4, 6]
    assert script.scenes[0].overrides == {"seed": 7}
    semicolons = parse_script("Time;Prompt\n5;a fox\n", name="x.csv")
    assert texts(semicolons) == ["a fox"] and semicolons.scenes[0].start == 5.0
    # recognised without the .csv name too
    assert parse_script("timestamp,text\n1,hello\n").format == "csv"


@pytest.mark.parametrize("csv_text, message", [
    ("time,words\n1,hello\n", "line 1: the CSV header needs a 'text' column (found: time, words)"),
    ("timestamp,text\n1,hello\n2,\n", "line 3: the scene has no text"),
    ("timestamp,text\n1,hello\n00:7x,bad time\n", "line 3: timestamp '00:7x' is not HH:MM:SS"),
    ("timestamp,text\n1,a,b\n", "line 2: 3 fields but the header has 2"),
    ("timestamp,text,seed\n1,a,1.5\n", "line 2: --seed must be a whole number"),
    ('timestamp,text\n1,"never closed\n2,x\n', "line 2: unexpected end of data"),
    ("", "line 1: the CSV file is empty"),
])
def test_csv_errors_name_the_line(csv_text, message):
    assert message in error_of(csv_text, name="s.csv")


# -- JSON --------------------------------------------------------------------------------------


def test_json_list_wrapped_object_strings_and_python_segments():
    doc = json.dumps([{"timestamp": "00:00:05", "text": "A lighthouse"},
                      {"time": 12, "prompt": "Waves", "style": "cinematic"}, "A gull"], indent=1)
    script = parse_script(doc, name="s.json")
    assert texts(script) == ["A lighthouse", "Waves", "A gull"]
    assert [s.start for s in script.scenes] == [5.0, 12.0, None]
    assert script.scenes[1].overrides == {"style": "cinematic"}
    wrapped = parse_script('{"title": "teaser", "segments": [{"timestamp": "0:01", "text": "x"}]}')
    assert wrapped.format == "json" and texts(wrapped) == ["x"]
    segments = parse_script([{"timestamp": "00:00:01", "text": "from python"}])
    assert segments.scenes[0].start == 1.0 and segments.scenes[0].text == "from python"


@pytest.mark.parametrize("doc, message", [
    ('[{"text": "a"},\n {"text": "b",}\n]', "line 2, column"),
    ('[\n  {"text": "a"},\n  {"timestamp": 3}\n]', "line 3: the segment has no \"text\""),
    ('{"segments": [\n {"text": "a"},\n\n {"text": "b", "seed": "x"}]}', "line 4: --seed must be a whole number"),
    ('{"title": "no list"}', "line 1: the JSON needs a list of segments"),
    ('[{"text": "a"}, 42]', "line 1: a segment must be an object"),
])
def test_json_errors_name_the_line(doc, message):
    assert message in error_of(doc, name="s.json")


# -- subtitles ---------------------------------------------------------------------------------


SRT = """1
00:00:01,000 --> 00:00:04,000
<i>A lighthouse</i> at dusk

2
00:00:04,500 --> 00:00:07,250
{\\an8}Waves crash
on the rocks

3
00:00:08,000 --> 00:00:09,000

"""


def test_srt_cues_become_scenes_timed_by_their_start():
    script = parse_script(SRT)
    assert script.format == "srt"
    assert texts(script) == ["A lighthouse at dusk", "Waves crash on the rocks"]  # the empty cue is a pause
    first, second = script.scenes
    assert (first.timestamp, first.start, first.end, first.line) == ("00:00:01,000", 1.0, 4.0, 2)
    assert (second.start, second.end, second.line) == (4.5, 7.25, 6)


def test_webvtt_with_header_notes_identifiers_settings_and_voice_tags(tmp_path):
    path = tmp_path / "teaser.vtt"
    path.write_text("WEBVTT - teaser\n\nNOTE written by hand\n\nSTYLE\n::cue { color: red }\n\n"
                    "intro\n00:01.000 --> 00:04.000 align:start position:10%\n<v Narrator>A lighthouse</v>\n\n"
                    "01:00:02.500 --> 01:00:03.000\nWaves\n", encoding="utf-8")
    script = read_script_file(path)
    assert script.format == "vtt" and script.name == "teaser.vtt"
    assert texts(script) == ["A lighthouse", "Waves"]
    assert [s.start for s in script.scenes] == [1.0, 3602.5] and script.scenes[1].line == 12  # a cue's line is its timing line


@pytest.mark.parametrize("text, name, message", [
    ("1\n00:00:01 -> 00:00:02\nHello\n", "s.srt", "line 2: expected a cue timing like 00:00:01,000 --> "),
    ("1\n00:00:01,000 --> 00:0x:02,000\nHello\n", "s.srt", "line 2: '00:0x:02,000' is not a cue time"),
    ("1\n00:00:05,000 --> 00:00:01,000\nHello\n", "s.srt", "line 2: the cue ends before it starts"),
    ("00:01.000 --> 00:02.000\nHello\n", "s.vtt", "line 1: a WebVTT file starts with \"WEBVTT\""),
    ("WEBVTT\n\ncue-id\nHello\n", "s.vtt", "line 4: expected a cue timing"),
])
def test_subtitle_errors_name_the_line(text, name, message):
    assert message in error_of(text, name=name)


# -- limits and odd input ----------------------------------------------------------------------


def test_ten_thousand_lines_are_refused_fast_at_the_scene_limit(monkeypatch):
    from studio import scripts

    # "Fast" as work, not seconds (a wall-clock bound fails on a loaded machine): no scene past the
    # limit has its options read.
    read = []
    real_split_options = scripts._split_options

    def counted(*args, **kwargs):
        read.append(args)
        return real_split_options(*args, **kwargs)

    monkeypatch.setattr(scripts, "_split_options", counted)
    big = "\n".join(f"scene number {i}" for i in range(10_000))
    message = error_of(big)
    assert len(read) == MAX_SCENES + 1
    assert f"line {MAX_SCENES + 1}: the script has more than 2,000 scenes" in message
    assert len(parse_script("\n".join(f"scene {i}" for i in range(MAX_SCENES))).scenes) == MAX_SCENES


def test_bad_encoding_empty_scripts_unknown_format_and_overlong_scenes():
    assert "line 2: the script is not UTF-8" in error_of(b"fine\n\xff\xfe broken\n")
    assert parse_script("\ufeffwith a byte order mark".encode("utf-8")).scenes[0].text == "with a byte order mark"
    assert "no scenes" in error_of("# only a comment\n\n")
    assert "unknown script format 'docx'" in error_of("a", format="docx")
    assert "line 1: the scene is 4,001 characters" in error_of("x" * 4001)
    assert "script file not found" in str(pytest.raises(InvalidRequest, read_script_file, "/nonexistent.srt").value)


def test_timestamps_parse_and_format():
    assert parse_timestamp("01:02:03.5") == 3723.5
    assert parse_timestamp("02:03,250") == 123.25
    assert parse_timestamp(7) == 7.0 and parse_timestamp("7.5") == 7.5
    assert parse_timestamp("intro") is None and parse_timestamp("") is None
    with pytest.raises(ValueError):
        parse_timestamp("00:61")
    assert format_seconds(3723.5) == "01:02:03.500" and format_seconds(5) == "00:00:05"


# -- subtitle files as they really are (issue 11) ----------------------------------------------


def cues(script):
    return [(scene.start, scene.text, scene.line) for scene in script.scenes]


@pytest.mark.parametrize("srt", [
    "1\n00:00:01,000 --> 00:00:02,000\nA lighthouse\n2\n00:00:03,000 --> 00:00:04,500\nWaves\n",
    "00:00:01,000 --> 00:00:02,000\nA lighthouse\n00:00:03,000 --> 00:00:04,500\nWaves\n",
])
def test_srt_cues_without_a_blank_line_between_them_stay_apart(srt):
    script = parse_script(srt)
    assert script.format == "srt"  # pasted without a name, with or without index lines
    assert cues(script) == [(1.0, "A lighthouse", 2 if srt[0] == "1" else 1),
                            (3.0, "Waves", 5 if srt[0] == "1" else 3)]


def test_webvtt_cues_without_a_blank_line_between_them_stay_apart():
    # the shape youtube-dl writes: header metadata, cue settings, no blank line between cues
    vtt = ("WEBVTT\nKind: captions\nLanguage: en\n\n"
           "00:00:01.000 --> 00:00:02.000 align:start position:0%\nA lighthouse\n"
           "00:00:02.000 --> 00:00:04.000 align:start position:0%\nWaves<00:00:03.000><c> crash</c>\n"
           "00:00:04.000 --> 00:00:05.000 align:start position:0%\n\n")
    assert cues(parse_script(vtt)) == [(1.0, "A lighthouse", 5), (2.0, "Waves crash", 7)]


def test_webvtt_cue_identifiers_that_start_like_note_style_or_region_are_cues():
    vtt = ("WEBVTT\n\nSTYLE\n::cue { color: yellow }\n\nREGION\nid:fred width:40%\n\n"
           "NOTES-1\n00:01.000 --> 00:02.000\nA lighthouse\n\n"
           "STYLE-intro\n00:03.000 --> 00:04.000\nWaves\n\n"
           "REGION-a\n00:05.000 --> 00:06.000\nA gull\n\n"
           "NOTE a comment, even\nover two lines\n\nNOTE\n\n")
    assert cues(parse_script(vtt, name="x.vtt")) == [(1.0, "A lighthouse", 10), (3.0, "Waves", 14),
                                                    (5.0, "A gull", 18)]
    only_such_cues = "WEBVTT\n\nNOTES-1\n00:01.000 --> 00:02.000\nA lighthouse\n"
    assert texts(parse_script(only_such_cues)) == ["A lighthouse"]


def test_webvtt_follows_the_parsing_algorithm_for_blocks_and_cue_text():
    vtt = ("WEBVTT\nX-TIMESTAMP-MAP=MPEGTS:0,LOCAL:00:00:00.000\n"
           "00:01.000 --> 00:02.000\n"  # a timing line ends the header
           "Fish &amp; chips &lt;3 <i>hot</i>\n"
           "2\n"  # an identifier without a blank line before it is text of the cue above
           "00:03.000-->00:04.000\n"
           "first\n   \nsecond\n")  # a line of spaces is not a blank line
    assert cues(parse_script(vtt)) == [(1.0, "Fish & chips <3 hot 2", 3), (3.0, "first second", 6)]


def test_srt_text_keeps_angle_brackets_that_are_not_tags():
    srt = ("1\n00:00:01,000 --> 00:00:02,000\nDistance < 5 km and > 2 km\n\n"
           "2\n00:00:03,000 --> 00:00:04,000\n<i>if a<b and c>d</i> <font color=\"#ff0\">{\\an8}x</font><B>y</B>\n")
    assert texts(parse_script(srt, name="s.srt")) == ["Distance < 5 km and > 2 km", "if a<b and c>d xy"]


def test_srt_blank_lines_inside_a_cue_stay_in_it_as_the_srt_library_reads_them():
    srt = "1\n00:00:01,000 --> 00:00:02,000\nA lighthouse\n\nat dusk\n\n\n2\n00:00:03.000 --> 00:00:04.000 X1:10\nWaves\n"
    assert cues(parse_script(srt)) == [(1.0, "A lighthouse at dusk", 2), (3.0, "Waves", 9)]


@pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-32-le", "utf-32-be"])
def test_utf16_and_utf32_files_with_a_byte_order_mark_are_read(codec, tmp_path):
    mark = {"utf-16-le": b"\xff\xfe", "utf-16-be": b"\xfe\xff", "utf-32-le": b"\xff\xfe\x00\x00",
            "utf-32-be": b"\x00\x00\xfe\xff"}[codec]
    path = tmp_path / "teaser.srt"
    path.write_bytes(mark + "1\r\n00:00:01,000 --> 00:00:02,000\r\nUn phare, 灯台\r\n".encode(codec))
    assert cues(read_script_file(path)) == [(1.0, "Un phare, 灯台", 2)]
    assert texts(parse_script(mark + "a fox\nb owl\n".encode(codec))) == ["a fox", "b owl"]


def test_a_broken_utf16_file_names_its_line():
    data = b"\xff\xfe" + "fine\nstill fine\n".encode("utf-16-le") + b"\x00\xdc"  # a lone low surrogate
    assert "line 3: the script is not UTF-16 text" in error_of(data)


def test_a_csv_pasted_without_a_name_reads_as_the_same_csv_named():
    pasted = 'prompt,seed\n"A lighthouse, at dusk",7\n"Waves\ncrash",\n'
    script = parse_script(pasted)
    assert script.format == "csv" and script.to_dict()["scenes"] == parse_script(pasted, name="s.csv").to_dict()["scenes"]
    assert texts(script) == ["A lighthouse, at dusk", "Waves crash"] and script.scenes[0].overrides == {"seed": 7}
    assert parse_script("Text;Style\nA fox;noir\n").scenes[0].overrides == {"style": "noir"}
    assert parse_script('"prompt"\t"steps"\n"a fox"\t4\n').scenes[0].overrides == {"steps": 4}
    # a first scene with a comma in it is still a plain-text script
    assert texts(parse_script("Prompt, dramatic light\nA fox, running\n")) == ["Prompt, dramatic light",
                                                                             "A fox, running"]


@pytest.mark.parametrize("text, message", [
    ("WEBVTT\n\n00:01.000 --> 00:02.000\nA\n\n00:03.000 --> 00:0x.000\nB\n", "line 6: '00:0x.000' is not a cue time"),
    ("WEBVTT\n\n00:01,000 --> 00:02.000\nA\n", "line 3: '00:01,000' is not a cue time like 00:00:01.000"),
    ("WEBVTT\n\n00:01.000 --> 00:02.000\nA\n\njust text\n", "line 6: expected a cue timing"),
    ("1\n00:00:01,000 --> 00:00:02,000\nA\n\n2\n00:00:03 -> 00:00:04\nB\n", "line 6: expected a cue timing"),
])
def test_subtitle_cues_the_algorithms_would_drop_are_refused_with_their_line(text, message):
    assert message in error_of(text)


def test_cli_batch_reads_a_utf16_script_from_stdin(studio_home, monkeypatch, capsys):
    import io

    from studio.cli import main
    from tests.fakes import echo_provider

    monkeypatch.setenv("STUDIO_PROVIDER_PLUGINS", echo_provider.PLUGIN_SPEC)
    echo_provider.install(studio_home / "catalog")
    script = "\ufeff1\r\n00:00:01,000 --> 00:00:02,000\r\nUn phare, 灯台\r\n".encode("utf-16-le")
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(script), encoding="utf-8"))
    assert main(["batch", "-", "--provider", "echo", "--dry-run", "--json"]) == 0, capsys.readouterr().err
    assert [scene["text"] for scene in json.loads(capsys.readouterr().out)["scenes"]] == ["Un phare, 灯台"]


@pytest.mark.parametrize("text, name, message", [
    ("1\n" + "0" * 100_000 + " -> 1\nA\n", "s.srt", "line 2: expected a cue timing like 00:00:01,000 --> "),
    ("WEBVTT\n\n00:01.000 --> 0" + "0" * 100_000 + "\nA\n", "s.vtt", "line 3: '0000"),
    ("timestamp,text\n1:" + "7" * 100_000 + ",A\n", "s.csv", "line 2: timestamp '1:777"),
    ("a fox --seed " + "x" * 100_000 + "\n", "s.txt", "line 1: --seed must be a whole number, not 'xxx"),
])
def test_errors_quote_a_huge_line_cut_short(text, name, message):
    error = error_of(text, name=name)
    assert message in error and "…'" in error and len(error) < 200
