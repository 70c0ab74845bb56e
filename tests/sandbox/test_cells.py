"""A cell behaves like a notebook cell: display, errors with the cell's line numbers, figures."""


def test_last_expression_is_displayed(sb, guard):
    r = sb.run("x = 41\nx + 1")
    assert r.error is None and r.stdout == "42\n"


def test_none_and_semicolon_are_not_displayed(sb, guard):
    assert sb.run("print('a')").stdout == "a\n"
    assert sb.run("x = 3\nx;").stdout == ""


def test_print_and_display_order(sb, guard):
    r = sb.run("print('first')\n'second'")
    assert r.stdout == "first\n'second'\n"


def test_syntax_error_points_at_the_cell_line(sb, guard):
    r = sb.run("x = 1\ny = (\nprint(x")
    assert r.error.type == "SyntaxError" and r.error.lineno in (2, 3)
    assert '"<cell>", line' in r.error.traceback
    assert r.stdout == ""


def test_traceback_has_cell_line_numbers_and_source(sb, guard):
    r = sb.run("def f(a):\n    return a / 0\n\nf(1)")
    assert r.error.type == "ZeroDivisionError" and r.error.message == "division by zero"
    assert r.error.lineno == 2
    tb = r.error.traceback
    assert 'File "<cell>", line 4' in tb and 'File "<cell>", line 2' in tb and "return a / 0" in tb
    assert "sandbox" not in tb  # none of the runner's own frames
    assert str(r.error) == tb.rstrip("\n")


def test_output_before_an_exception_is_kept(sb, guard):
    r = sb.run("print('partial')\nraise ValueError('bad value')")
    assert r.stdout == "partial\n" and r.error.type == "ValueError" and r.error.message == "bad value"


def test_system_exit_is_reported(sb, guard):
    r = sb.run("import sys\nsys.exit(3)")
    assert r.error.type == "SystemExit"


def test_input_explains_itself(sb, guard):
    r = sb.run("name = input('your name? ')")
    assert r.error.type == "EOFError" and "Assign the values" in r.error.message
    assert "cell.py" not in r.error.traceback


def test_stdin_is_empty(sb, guard):
    r = sb.run("import sys\nsys.stdin.read()")
    assert r.error is None and r.stdout == "''\n"


def test_matplotlib_figure_returns_png(sb, guard):
    r = sb.run("import matplotlib.pyplot as plt\nplt.plot([1, 2, 3], [3, 1, 2])\nplt.title('t')\n"
               "plt.figure()\nplt.bar([1, 2], [3, 4]);")
    assert r.error is None and len(r.images) == 2
    assert all(img.startswith(b"\x89PNG\r\n\x1a\n") and len(img) > 1000 for img in r.images)


def test_numpy_available_and_random_reseeded(sb, guard):
    a = sb.run("import numpy as np, random\nprint(np.random.rand(), random.random())")
    b = sb.run("import numpy as np, random\nprint(np.random.rand(), random.random())")
    assert a.error is None and b.error is None
    x, y = a.stdout.split(), b.stdout.split()
    assert x[0] != y[0] and x[1] != y[1]  # a fork must not replay the zygote's random stream


def test_numpy_reseed_gives_a_working_generator(sb, guard):
    # Every draw kind of the legacy generator after the reseed, including the cached Gaussian.
    code = ("import numpy as np\na = np.random.standard_normal(3)\nb = np.random.randint(0, 2**31, 4)\n"
            "st = np.random.get_state()\nprint(st[0], len(st[1]), st[3], len(set(b.tolist())), "
            "bool(np.all(np.isfinite(a))))")
    outs = [sb.run(code) for _ in range(3)]
    assert all(r.error is None and r.stdout.split()[0] == "MT19937" and r.stdout.split()[1] == "624"
               and r.stdout.split()[-1] == "True" for r in outs)
    draws = [sb.run("import numpy as np\nprint(np.random.standard_normal())").stdout for _ in range(3)]
    assert len(set(draws)) == 3


def test_session_cells_reseed_too(sb, guard):
    with sb.session() as s:
        s.run("import numpy as np")
        a, b = s.run("np.random.standard_normal()").stdout, s.run("np.random.standard_normal()").stdout
    assert a != b


def test_unicode_round_trip(sb, guard):
    r = sb.run("print('héllo 世界 🎉')\n'ünï'")
    assert r.stdout == "héllo 世界 🎉\n'ünï'\n"


def test_hostile_exception_str(sb, guard):
    r = sb.run("class E(Exception):\n    def __str__(self):\n        raise RuntimeError('no')\nraise E()")
    assert r.error is not None and r.error.type in ("E", "Exception")


def test_result_helpers(sb, guard):
    r = sb.run("print('out')\nimport sys\nprint('err', file=sys.stderr)\n1/0")
    assert not r.ok and r.duration_s > 0
    text = r.text()
    assert text.startswith("out\nerr\nTraceback") and text.endswith("ZeroDivisionError: division by zero")
