from runtime.service import run_service
from services.execution.main import SPEC

run_service(SPEC)
