"""`recdistill demo`: the whole loop on one dataset, end to end, with a report.

This package orchestrates the components (teacher_service, student_server, distill_worker) the way an
operator would run them; it holds no model or serving logic of its own.
"""
