from tests.teacher_service.conftest import tiny_teacher, triton_teacher  # noqa: F401 - shared session fixtures
