from runtime.service import run_service
from services.portfolio.main import SPEC

run_service(SPEC)
